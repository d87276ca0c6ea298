//! monitoring/: the alert policies and the dashboard parse, cover what issue 5 asks for, and
//! name only metrics a running server exports (scraped from its /metrics after a real job).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::*;
use crate::{read, repo};

/// Every file in monitoring/, parsed: (file name, JSON).
fn files() -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = std::fs::read_dir(repo().join("monitoring"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| {
            let json = serde_json::from_str(&read(&format!("monitoring/{name}")))
                .unwrap_or_else(|e| panic!("monitoring/{name}: {e}"));
            (name, json)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn file(name: &str) -> Value {
    files()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no monitoring/{name}"))
        .1
}

/// Every PromQL expression in a file: alert conditions' `query`, dashboard `prometheusQuery`.
fn promql(json: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("prometheusQuery", Value::String(q)) => out.push(q.clone()),
                        ("conditionPrometheusQueryLanguage", condition) => {
                            out.push(condition["query"].as_str().expect("query").to_string())
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, &mut out);
    out
}

/// The metric names a PromQL expression reads: its identifiers in the service's namespaces
/// (`transcoder_…`, `process_…`); labels and functions are neither.
fn metric_names(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("transcoder_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn alert_policies_watch_encode_latency_failures_and_memory() {
    for (name, json) in files() {
        assert!(
            json["displayName"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        if name.starts_with("alert-") {
            let conditions = json["conditions"].as_array().expect("conditions");
            assert!(!conditions.is_empty(), "{name}");
            assert_eq!(json["combiner"], "OR", "{name}");
            assert!(json["documentation"]["content"].is_string(), "{name}");
        }
    }
    let latency = promql(&file("alert-encode-p95.json"));
    assert!(
        latency[0].starts_with("histogram_quantile(0.95,")
            && latency[0].contains("transcoder_encode_seconds_bucket"),
        "{latency:?}"
    );
    let failures = promql(&file("alert-job-failures.json"));
    assert!(
        failures[0].contains(r#"transcoder_jobs_total{state="failed"}"#)
            && failures[0].ends_with("> 0.05"),
        "{failures:?}"
    );
    // Memory is Cloud Run's own metric (the limit includes the in-memory /tmp).
    let memory = &file("alert-memory.json")["conditions"][0]["conditionThreshold"];
    let filter = memory["filter"].as_str().unwrap();
    assert!(
        filter.contains(r#"metric.type = "run.googleapis.com/container/memory/utilizations""#)
            && filter.contains(r#"resource.type = "cloud_run_revision""#)
            && filter.contains("${SERVICE}"),
        "{filter}"
    );
    assert_eq!(memory["comparison"], "COMPARISON_GT");
    assert_eq!(memory["thresholdValue"], 0.8);
}

#[test]
fn the_dashboard_shows_queue_encoders_encode_seconds_by_tier_and_failures() {
    let queries = promql(&file("dashboard.json"));
    let shows = |metric: &str, also: &str| {
        assert!(
            queries
                .iter()
                .any(|q| q.contains(metric) && q.contains(also)),
            "no chart of {metric} ({also}) in {queries:#?}"
        )
    };
    shows("transcoder_queue_depth", "");
    shows("transcoder_encodes_running", "");
    shows("transcoder_encode_seconds_bucket", "tier");
    shows("transcoder_encode_seconds_sum", "tier");
    shows("transcoder_jobs_total", "state");
    shows("transcoder_renditions_total{state=\"failed\"}", "tier");
}

/// Names Managed Service for Prometheus stores are the names /metrics exports (histograms as
/// `_bucket`, `_sum`, `_count`), so every name in a query must be one a real server exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_monitoring_files_use_is_exported() {
    let ws = Workspace::new("deploy_metrics");
    let clip = ws.clip("clip.mp4", 256, 144, 2.0, true);
    let app = spawn_app(&[]).await;
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let samples = scrape_until(&app.api, |s| {
        metric(s, "transcoder_jobs_total", &[("state", "ready")]).is_some_and(|v| v >= 1.0)
    })
    .await;
    let exported: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    app.stop().await;

    for (name, json) in files() {
        for query in promql(&json) {
            let used = metric_names(&query);
            assert!(
                !used.is_empty(),
                "monitoring/{name}: no service metric in `{query}`"
            );
            for metric in used {
                assert!(
                    exported.contains(metric.as_str()),
                    "monitoring/{name} uses {metric}, which /metrics does not export \
                     (it exports {exported:?}); query: `{query}`"
                );
            }
        }
    }
}
