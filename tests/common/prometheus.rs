//! The Prometheus text exposition format as `/metrics` serves it: a strict parser (every line
//! must be a comment or a valid sample) and scraping until a series gets where a test wants.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::server::Api;

/// One sample of the Prometheus text exposition format.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y\"z"}` (from after the `{`): the labels and the rest of the line.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once('=').ok_or("label without `=`")?;
        let name = name.trim();
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape `\\{c}`")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = after[1 + end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses the Prometheus text format: comments (`# HELP`, `# TYPE`) and empty lines are
/// skipped; every other line must be `name value` or `name{labels} value` (an optional integer
/// timestamp may follow), with a float value.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = (|| -> Result<Sample, String> {
            let name_end = line.find(['{', ' ']).ok_or("no value")?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(format!("bad metric name `{name}`"));
            }
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(after) => parse_labels(after)?,
                None => (BTreeMap::new(), &line[name_end..]),
            };
            let mut fields = rest.split_whitespace();
            let value = fields.next().ok_or("no value")?;
            let value = parse_float(value).ok_or(format!("`{value}` is not a float"))?;
            if let Some(timestamp) = fields.next() {
                timestamp
                    .parse::<i64>()
                    .map_err(|_| format!("bad timestamp `{timestamp}`"))?;
            }
            if fields.next().is_some() {
                return Err("junk after the value".into());
            }
            Ok(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })();
        samples.push(parsed.unwrap_or_else(|e| panic!("not Prometheus text ({e}): {line:?}")));
    }
    samples
}

/// The value of the sample `name` whose labels include every pair in `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET /metrics`: a 200 in a `text/plain` type, parsed.
pub async fn scrape(api: &Api) -> Vec<Sample> {
    let response = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_prometheus(&response.text().await.unwrap())
}

/// Scrapes until `done(samples)` holds: the job's final state shows in its status an instant
/// before the registry counts it.
pub async fn scrape_until(api: &Api, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let started = Instant::now();
    loop {
        let samples = scrape(api).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "metrics never got there: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
