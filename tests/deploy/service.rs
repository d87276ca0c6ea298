//! cloudrun.yaml as Cloud Run will read it: the instance shape, probes, port, secrets and the
//! metrics sidecar, and an env entry for every setting the service reads.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::{read, repo};

/// Settings the service reads that cloudrun.yaml must not set, each with the reason.
const NOT_SET_IN_PRODUCTION: &[(&str, &str)] = &[
    (
        "PORT",
        "Cloud Run sets it from containerPort and refuses it as an env entry",
    ),
    (
        "GCS_ENDPOINT",
        "a Cloud Storage emulator's address, for tests only",
    ),
    (
        "CHUNK_SECONDS",
        "unset in production: each tier takes its own default chunk length (jobs::plan)",
    ),
    (
        "HLS_JS_URL",
        "unset, the player page loads the pinned hls.js the service embeds (no third-party CDN)",
    ),
    (
        "OIDC_JWKS_URL",
        "tests point it at their own keys; production uses the default, Google's",
    ),
    (
        "PUBSUB_EMULATOR_HOST",
        "a Pub/Sub emulator's address, for tests only",
    ),
];

/// Settings that come from Secret Manager (`valueFrom.secretKeyRef`), never a plain value, with
/// the placeholder deploy.sh fills with the secret's name.
const SECRETS: &[(&str, &str)] = &[
    ("UPLOAD_TOKEN", "${UPLOAD_TOKEN_SECRET}"),
    ("WEBHOOK_SECRET", "${WEBHOOK_SECRET_SECRET}"),
];

/// Env entries the service's own code does not name but a library it uses reads.
const READ_BY_LIBRARIES: &[&str] = &["RUST_LOG"];

/// cloudrun.yaml parsed (placeholders such as `${SERVICE}` stay strings).
pub fn service() -> Value {
    serde_norway::from_str(&read("cloudrun.yaml")).expect("cloudrun.yaml is YAML")
}

/// The container called `name` in the revision template.
fn container<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container `{name}`"))
}

/// The transcoder container's env entries by name.
fn env(service: &Value) -> Vec<(String, &Value)> {
    container(service, "transcoder")["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name").to_string(), e))
        .collect()
}

/// Every name in `src/**/*.rs` read as a setting: `env = "NAME"` (clap) or `env::var("NAME")`.
pub fn settings_read_by_the_service() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["env = \"", "env::var(\""] {
                    for (at, _) in text.match_indices(marker) {
                        let rest = &text[at + marker.len()..];
                        let name = &rest[..rest.find('"').expect("closing quote")];
                        names.insert(name.to_string());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&repo().join("src"), &mut names);
    names
}

#[test]
fn revisions_run_gen2_with_cpu_always_allocated_and_startup_boost() {
    let service = service();
    assert_eq!(service["apiVersion"], "serving.knative.dev/v1");
    assert_eq!(service["kind"], "Service");
    let annotations = &service["spec"]["template"]["metadata"]["annotations"];
    for (key, value) in [
        ("run.googleapis.com/execution-environment", "gen2"),
        ("run.googleapis.com/cpu-throttling", "false"),
        ("run.googleapis.com/startup-cpu-boost", "true"),
        ("autoscaling.knative.dev/minScale", "0"),
        ("autoscaling.knative.dev/maxScale", "10"),
    ] {
        // Annotation values must be strings: an unquoted `false` or `10` is refused.
        assert_eq!(annotations[key], json!(value), "{key}");
    }
    assert_eq!(
        service["spec"]["template"]["spec"]["serviceAccountName"],
        "${RUNTIME_SA}"
    );
}

#[test]
fn an_instance_is_4_vcpu_and_16_gib_taking_10_requests_of_up_to_an_hour() {
    let service = service();
    let template = &service["spec"]["template"]["spec"];
    assert_eq!(template["containerConcurrency"], 10);
    assert_eq!(template["timeoutSeconds"], 3600);
    let resources = &container(&service, "transcoder")["resources"];
    assert_eq!(resources["limits"], json!({"cpu": "4", "memory": "16Gi"}));
    assert_eq!(resources["requests"]["memory"], "8Gi");
}

#[test]
fn serves_h2c_on_8080_with_startup_and_liveness_probes() {
    let service = service();
    let transcoder = container(&service, "transcoder");
    assert_eq!(transcoder["image"], "${IMAGE}");
    assert_eq!(
        transcoder["ports"],
        json!([{"name": "h2c", "containerPort": 8080}])
    );
    assert_eq!(transcoder["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(transcoder["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["startupProbe", "livenessProbe"] {
        let probe = &transcoder[probe];
        assert_eq!(probe["httpGet"]["port"], 8080);
        let period = probe["periodSeconds"].as_u64().unwrap();
        let timeout = probe["timeoutSeconds"].as_u64().unwrap();
        assert!(timeout <= period, "{probe}");
    }
    // Cloud Run gives a startup probe at most 600 s (failureThreshold × periodSeconds).
    let startup = &transcoder["startupProbe"];
    let window =
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(window <= 600, "{window} s");
}

#[test]
fn every_setting_the_service_reads_is_set_and_no_test_only_one_is() {
    let service = service();
    let env = env(&service);
    let set: BTreeSet<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
    let read = settings_read_by_the_service();
    assert!(
        read.contains("INPUT_STORE") && read.contains("LOG_FORMAT"),
        "{read:?}"
    );
    let excluded: BTreeSet<&str> = NOT_SET_IN_PRODUCTION.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&String> = read
        .iter()
        .filter(|name| !set.contains(name.as_str()) && !excluded.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "cloudrun.yaml does not set {missing:?}, which the service reads: add each to the \
         transcoder container's env, or to NOT_SET_IN_PRODUCTION in tests/deploy/service.rs with the reason"
    );
    for (name, why) in NOT_SET_IN_PRODUCTION {
        assert!(
            !set.contains(name),
            "cloudrun.yaml must not set {name}: {why}"
        );
    }
    let unknown: Vec<&&str> = set
        .iter()
        .filter(|name| !read.contains(**name) && !READ_BY_LIBRARIES.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "cloudrun.yaml sets {unknown:?}, which nothing reads (a typo?)"
    );
    assert_eq!(env.len(), set.len(), "a name is set twice");
}

#[test]
fn queue_mode_takes_its_topics_and_push_account_from_deploy() {
    let service = service();
    let env = env(&service);
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e["value"].clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    // deploy.sh fills these; `deploy.sh queue` makes the topics and the push subscriptions
    // whose account WORK_ALLOWED_EMAILS admits on /work.
    for name in ["WORK_TOPIC", "WORK_TOPIC_CRITICAL", "WORK_ALLOWED_EMAILS"] {
        assert_eq!(value(name), json!(format!("${{{name}}}")), "{name}");
    }
    assert_eq!(value("WORK_LEASE_SECONDS"), "60");
    assert_eq!(value("WORK_WAIT_SECONDS"), "10");
    // A push waits at most the subscriptions' ack deadline (600 s) for its unit, so requests
    // may last that long at least (uploads need more: the timeout stays at Cloud Run's maximum).
    let timeout = service["spec"]["template"]["spec"]["timeoutSeconds"]
        .as_u64()
        .unwrap();
    assert!(timeout >= 600, "{timeout}");
}

/// Every env entry is explained where settings are documented: README names it.
#[test]
fn readme_names_every_setting_cloudrun_yaml_sets() {
    let readme = read("README.md");
    let named = |name: &str| {
        readme.match_indices(name).any(|(at, _)| {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            !readme[..at].ends_with(word) && !readme[at + name.len()..].starts_with(word)
        })
    };
    let service = service();
    let missing: Vec<String> = env(&service)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !named(name))
        .collect();
    assert!(missing.is_empty(), "README does not name {missing:?}");
}

#[test]
fn secrets_come_from_secret_manager_and_stores_are_buckets() {
    let service = service();
    let env = env(&service);
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| *e)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for (name, placeholder) in SECRETS {
        let entry = value(name);
        assert!(
            entry.get("value").is_none(),
            "{name} must not be a plain value"
        );
        let secret = &entry["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["name"], *placeholder, "{name}");
        assert_eq!(secret["key"], "latest", "{name}");
    }
    assert_eq!(value("INPUT_STORE")["value"], "gs://${INPUT_BUCKET}");
    assert_eq!(value("OUTPUT_STORE")["value"], "gs://${CDN_BUCKET}");
    assert_eq!(value("BIND_ADDRESS")["value"], "0.0.0.0");
    assert_eq!(value("LOG_FORMAT")["value"], "json");
    assert_eq!(value("TRIGGER_AUDIENCE")["value"], "${TRIGGER_AUDIENCE}");
    assert_eq!(value("TRIGGER_ALLOWED_EMAILS")["value"], "${INVOKER_SA}");
    // The sidecar scrapes without credentials.
    assert_eq!(value("OPEN_METRICS")["value"], "true");
    // Receivers on private addresses or the metadata server are refused in production.
    assert_eq!(value("WEBHOOK_ALLOW_PRIVATE")["value"], "false");
    // Every value is a string: Cloud Run refuses numbers and booleans in env.
    for (name, entry) in &env {
        assert!(
            entry.get("value").is_none_or(Value::is_string),
            "{name}: {entry}"
        );
    }
}

#[test]
fn the_prometheus_sidecar_starts_after_the_service() {
    let service = service();
    let collector = container(&service, "collector");
    let image = collector["image"].as_str().unwrap();
    assert!(
        image.starts_with(
            "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:"
        ),
        "{image}"
    );
    assert!(
        collector.get("ports").is_none(),
        "only the service container takes requests"
    );
    let dependencies = &service["spec"]["template"]["metadata"]["annotations"]["run.googleapis.com/container-dependencies"];
    let dependencies: Value = serde_json::from_str(dependencies.as_str().unwrap()).unwrap();
    assert_eq!(dependencies, json!({"collector": ["transcoder"]}));
}
