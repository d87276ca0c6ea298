//! A real Pub/Sub emulator (`gcloud beta emulators pubsub start`, on the machine image) for
//! tests, driven through its REST API: topics, push and pull subscriptions, publish and pull.
//!
//! gcloud starts the emulator's Java process and exits on its own schedule, so the Java process
//! outlives a killed gcloud: `Drop` ends it by its own pid, found by its `--port=PORT` argument.
//!
//! How emulator 0.8.20 pushes (seen on this machine with a recording endpoint; what a queue test
//! can count on):
//! - at most 2 pushes of one subscription are in flight at a time, whatever the backlog (200
//!   messages, 3 s handler, two subscriptions: 4 in flight for 50 s); a fast handler gets about
//!   50 a second. So to fill two instances, use more subscriptions (topics), not more messages;
//! - only 200 and 204 acknowledge; 202 is redelivered (8 pushes of one message in 20 s);
//! - a push still running at the ack deadline is pushed again meanwhile (10 s deadline, 25 s
//!   handler: pushes at 0, 10, 27 and 39 s);
//! - a 429 backs off by the retry policy and ignores Retry-After (1–8 s policy, Retry-After 1:
//!   pushes at 0, 1, 4, 7, 10, 14, 19, 25 s);
//! - the envelope carries no `deliveryAttempt`, even with a dead-letter policy; the message that
//!   lands on the dead-letter topic carries `CloudPubSubDeadLetterSource*` attributes.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How long the emulator may take to answer (10–15 s is usual; a busy machine is slower).
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct PubSubEmulator {
    pub port: u16,
    pub project: String,
    gcloud: Child,
    log: tempfile::NamedTempFile,
    http: reqwest::Client,
}

/// A push subscription's settings, as deploy.sh sets them (shorter times for tests).
#[derive(Clone, Debug)]
pub struct Push {
    pub endpoint: String,
    pub ack_deadline_seconds: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The dead-letter topic (a full `projects/P/topics/T` path) and the delivery attempts
    /// before a message goes there (5–100).
    pub dead_letter: Option<(String, u32)>,
}

impl Push {
    /// Pushes to `endpoint` with a 10 s ack deadline, 1–2 s backoff and no dead-letter topic.
    pub fn to(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            ack_deadline_seconds: 10,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            dead_letter: None,
        }
    }
}

/// A message taken from a pull subscription (and acknowledged).
#[derive(Clone, Debug)]
pub struct Pulled {
    pub message_id: String,
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
}

impl PubSubEmulator {
    /// Starts an emulator for `project` on a free loopback port and waits until it answers.
    pub async fn start(project: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let gcloud = Command::new("gcloud")
            .args(["beta", "emulators", "pubsub", "start", "--quiet"])
            .arg(format!("--host-port=127.0.0.1:{port}"))
            .arg(format!("--project={project}"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("gcloud is not on PATH: the Google Cloud SDK is on every CI machine (shared/FACTS.md)");
        let mut emulator = Self {
            port,
            project: project.to_owned(),
            gcloud,
            log,
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let answer = emulator.http.get(emulator.url("/")).send().await;
            if matches!(answer, Ok(a) if a.status().is_success()) {
                break;
            }
            let exited = emulator.gcloud.try_wait().unwrap().is_some();
            if exited || started.elapsed() > START_TIMEOUT {
                panic!(
                    "the Pub/Sub emulator did not start on port {port} ({}). It comes with the \
                     machine image, not from .ci/setup: the Google Cloud SDK's `pubsub-emulator` \
                     component ({COMPONENT}: {}) runs on Java (`java` on PATH: {}). \
                     gcloud said:\n{}",
                    if exited { "gcloud exited" } else { "timed out" },
                    if std::path::Path::new(COMPONENT).is_dir() {
                        "present"
                    } else {
                        "MISSING"
                    },
                    if java_runs() { "yes" } else { "NO" },
                    emulator.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        emulator
    }

    /// The value `PUBSUB_EMULATOR_HOST` takes for this emulator.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `projects/P/topics/NAME`.
    pub fn topic(&self, name: &str) -> String {
        format!("projects/{}/topics/{name}", self.project)
    }

    /// `projects/P/subscriptions/NAME`.
    pub fn subscription(&self, name: &str) -> String {
        format!("projects/{}/subscriptions/{name}", self.project)
    }

    /// What gcloud and the emulator printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates topic `name` (at least 3 characters); returns its full path.
    pub async fn create_topic(&self, name: &str) -> String {
        let topic = self.topic(name);
        self.call(reqwest::Method::PUT, &topic, json!({})).await;
        topic
    }

    /// Creates push subscription `name` on `topic` (a full path); returns its full path.
    pub async fn create_push_subscription(&self, name: &str, topic: &str, push: &Push) -> String {
        let seconds = |d: Duration| format!("{}s", d.as_secs_f64());
        let mut body = json!({
            "topic": topic,
            "ackDeadlineSeconds": push.ack_deadline_seconds,
            "pushConfig": { "pushEndpoint": push.endpoint },
            "retryPolicy": {
                "minimumBackoff": seconds(push.min_backoff),
                "maximumBackoff": seconds(push.max_backoff),
            },
        });
        if let Some((dead_topic, attempts)) = &push.dead_letter {
            body["deadLetterPolicy"] =
                json!({ "deadLetterTopic": dead_topic, "maxDeliveryAttempts": attempts });
        }
        let subscription = self.subscription(name);
        self.call(reqwest::Method::PUT, &subscription, body).await;
        subscription
    }

    /// Creates pull subscription `name` on `topic` (a full path); returns its full path. A topic
    /// keeps only what arrives while it has a subscription, so create it before publishing.
    pub async fn create_pull_subscription(&self, name: &str, topic: &str) -> String {
        let subscription = self.subscription(name);
        let body = json!({ "topic": topic, "ackDeadlineSeconds": 60 });
        self.call(reqwest::Method::PUT, &subscription, body).await;
        subscription
    }

    /// Publishes one message to `topic` (a full path); returns its message id.
    pub async fn publish(&self, topic: &str, data: &[u8], attributes: &[(&str, &str)]) -> String {
        let attributes: BTreeMap<_, _> = attributes.iter().copied().collect();
        let message = json!({ "data": b64().encode(data), "attributes": attributes });
        let path = format!("{topic}:publish");
        let answer = self
            .call(
                reqwest::Method::POST,
                &path,
                json!({ "messages": [message] }),
            )
            .await;
        answer["messageIds"][0].as_str().unwrap().to_owned()
    }

    /// Pulls and acknowledges what `subscription` (a full path) holds, waiting up to `wait` for
    /// at least one message; empty if none came.
    pub async fn pull(&self, subscription: &str, wait: Duration) -> Vec<Pulled> {
        let started = Instant::now();
        let path = format!("{subscription}:pull");
        loop {
            let body = json!({ "maxMessages": 100, "returnImmediately": true });
            let answer = self.call(reqwest::Method::POST, &path, body).await;
            let received = answer["receivedMessages"].as_array().cloned();
            if let Some(received) = received.filter(|r| !r.is_empty()) {
                let ack_ids: Vec<&Value> = received.iter().map(|r| &r["ackId"]).collect();
                let ack = format!("{subscription}:acknowledge");
                self.call(reqwest::Method::POST, &ack, json!({ "ackIds": ack_ids }))
                    .await;
                return received.iter().map(|r| pulled(&r["message"])).collect();
            }
            if started.elapsed() > wait {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One REST call on `/v1/{path}`; panics unless it succeeds.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let answer = self
            .http
            .request(method.clone(), self.url(&format!("/v1/{path}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(
            status.is_success(),
            "{method} {path}: HTTP {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The emulator's processes (Java, and its launcher script if it still runs): those whose
    /// arguments include `--port=PORT`.
    fn emulator_pids(&self) -> Vec<libc::pid_t> {
        let wanted = format!("--port={}", self.port);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let java = cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == wanted.as_bytes());
                java.then_some(pid)
            })
            .collect()
    }
}

/// Where the machine image's Google Cloud SDK keeps the emulator.
const COMPONENT: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator";

fn java_runs() -> bool {
    Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn pulled(message: &Value) -> Pulled {
    let data = message["data"].as_str().unwrap_or("");
    let attributes = message["attributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect();
    Pulled {
        message_id: message["messageId"].as_str().unwrap_or("").to_owned(),
        data: b64().decode(data).unwrap(),
        attributes,
    }
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        for pid in self.emulator_pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.gcloud.kill();
        let _ = self.gcloud.wait();
    }
}
