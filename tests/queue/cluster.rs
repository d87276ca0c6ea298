//! Queue mode as deployed, on loopback: the real Pub/Sub emulator, `serve` processes sharing one
//! input and one output folder, and a round-robin proxy in front of them (Cloud Run's front end)
//! that the push subscriptions deliver to: `/work` for the work topic, `/work/dead-letter` for
//! its dead-letter topic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::*;

/// Longest a queued video may take here (a 2-minute 1080p ladder on 2 shared cores).
pub const VIDEO_TIMEOUT: Duration = Duration::from_secs(600);

/// Delivery attempts before the dead-letter topic (deploy.sh's figure).
pub const ATTEMPTS: u32 = 5;

pub struct Cluster {
    pub ws: Workspace,
    pub pubsub: PubSubEmulator,
    pub proxy: Proxy,
    pub servers: Vec<ServerProcess>,
    /// The topic the push subscription delivers from.
    pub work: String,
    /// With `relay`: the topic the services publish to, and a pull subscription on it.
    pub planned: Option<(String, String)>,
}

impl Cluster {
    /// `count` services in queue mode with `env` on top. With `relay` the services publish to a
    /// topic of their own that nobody is pushed from: the test takes the units from it and
    /// publishes them to the work topic itself (to change the source in between, or deliver a
    /// unit several times at once).
    pub async fn start(test: &str, count: usize, env: &[(&str, &str)], relay: bool) -> Self {
        let ws = Workspace::new(test);
        let pubsub = PubSubEmulator::start("vt-cluster").await;
        let work = pubsub.create_topic("work").await;
        let dead = pubsub.create_topic("work-dead").await;
        let planned = match relay {
            true => {
                let topic = pubsub.create_topic("planned").await;
                let pull = pubsub
                    .create_pull_subscription("planned-pull", &topic)
                    .await;
                Some((topic, pull))
            }
            false => None,
        };
        let published = planned.as_ref().map_or(&work, |(topic, _)| topic).clone();
        let host = pubsub.host();
        let mut all: Vec<(&str, &str)> = vec![
            ("PUBSUB_EMULATOR_HOST", &host),
            ("WORK_TOPIC", &published),
            ("WORK_LEASE_SECONDS", "6"),
            ("WORK_WAIT_SECONDS", "2"),
            ("MAX_PARALLEL_ENCODES", "1"),
            ("SHUTDOWN_GRACE", "8"),
        ];
        all.extend_from_slice(env);
        let servers: Vec<ServerProcess> = (0..count)
            .map(|_| ServerProcess::start(ws.path(), &all))
            .collect();
        let bases: Vec<String> = servers.iter().map(|s| s.api.url("")).collect();
        let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
        let proxy = Proxy::start(&bases).await;
        let mut push = Push::to(&proxy.url("/work"));
        push.ack_deadline_seconds = 600;
        push.dead_letter = Some((dead.clone(), ATTEMPTS));
        pubsub
            .create_push_subscription("work-push", &work, &push)
            .await;
        let recorder = Push::to(&proxy.url("/work/dead-letter"));
        pubsub
            .create_push_subscription("work-dead-push", &dead, &recorder)
            .await;
        Self {
            ws,
            pubsub,
            proxy,
            servers,
            work,
            planned,
        }
    }

    pub fn input(&self, key: &str) -> PathBuf {
        self.ws.path().join("input").join(key)
    }

    /// Puts `clip` in the shared input folder as `key`.
    pub fn put_input(&self, key: &str, clip: &Path) {
        let to = self.input(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(clip, to).unwrap();
    }

    /// Triggers video `id` from `key` through the proxy; the answer's code.
    pub async fn trigger(&self, id: &str, key: &str) -> u16 {
        let api = Api::new(&self.proxy.base);
        api.trigger(&json!({"videoId": id, "inputPath": key}), &[])
            .await
            .code
    }

    pub fn video_dir(&self, id: &str) -> PathBuf {
        self.ws.path().join("cdn").join("videos").join(id)
    }

    /// status.json as the shared output folder holds it.
    pub fn status(&self, id: &str) -> Value {
        std::fs::read_to_string(self.video_dir(id).join("status.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    /// Polls status.json until `done`, every 200 ms; panics after `VIDEO_TIMEOUT`. `seen` gets
    /// every status read on the way.
    pub async fn wait_for(
        &self,
        id: &str,
        done: impl Fn(&Value) -> bool,
        mut seen: impl FnMut(&Value),
    ) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(id);
            seen(&status);
            if done(&status) {
                return status;
            }
            assert!(
                started.elapsed() < VIDEO_TIMEOUT,
                "video {id} not there after {VIDEO_TIMEOUT:?}: {status:#}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_final_seeing(id, |_| {}).await
    }

    /// Waits for a final state; `seen` gets every status read on the way.
    pub async fn wait_final_seeing(&self, id: &str, seen: impl FnMut(&Value)) -> Value {
        let is_final =
            |s: &Value| matches!(s["state"].as_str(), Some("ready" | "partial" | "failed"));
        self.wait_for(id, is_final, seen).await
    }

    /// The units the services published (relay mode), once `count` are in.
    pub async fn planned_units(&self, count: usize) -> Vec<Pulled> {
        let (_, pull) = self.planned.as_ref().expect("a relay cluster");
        let mut units = Vec::new();
        let started = Instant::now();
        while units.len() < count {
            assert!(started.elapsed() < Duration::from_secs(60), "{units:?}");
            units.extend(self.pubsub.pull(pull, Duration::from_secs(5)).await);
        }
        units
    }

    /// Publishes units taken from the planned topic to the work topic.
    pub async fn relay(&self, units: &[Pulled]) {
        for unit in units {
            let attributes: Vec<(&str, &str)> = unit
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.pubsub
                .publish(&self.work, &unit.data, &attributes)
                .await;
        }
    }

    /// How many units `server` started encoding (its log's "decode pass started" lines) of
    /// video `id`, `unit` if given.
    pub fn encodes(&self, server: usize, id: &str, unit: Option<&str>) -> usize {
        self.servers[server]
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "decode pass started")
            // Span fields are flattened into each line.
            .filter(|l| l["video_id"] == id && unit.is_none_or(|u| l["unit"] == u))
            .count()
    }

    /// Every service's `transcoder_work_units_total{result}`.
    pub async fn units_total(&self, result: &str) -> Vec<f64> {
        let mut all = Vec::new();
        for server in &self.servers {
            let samples = scrape(&server.api).await;
            all.push(
                metric(
                    &samples,
                    "transcoder_work_units_total",
                    &[("result", result)],
                )
                .unwrap_or(0.0),
            );
        }
        all
    }

    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- server {i} ---\n{}", tail(&s.log_text(), 40)))
            .collect()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Pub/Sub push envelope carrying `unit` (as the emulator delivers it).
pub fn envelope(unit: &Pulled) -> Value {
    json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(&unit.data),
            "attributes": unit.attributes,
            "messageId": unit.message_id,
        },
        "subscription": "projects/vt-cluster/subscriptions/work-push",
    })
}
