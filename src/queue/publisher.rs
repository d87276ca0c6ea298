//! Publishing work units to one Pub/Sub topic.
//!
//! Built on the official `google-cloud-pubsub` crate (googleapis/google-cloud-rust, gRPC). It
//! reaches the Pub/Sub emulator: checked with emulator 0.8.20 from the machine image (tests/queue).
//! The crate does not read `PUBSUB_EMULATOR_HOST` itself, so this module does: when it is set,
//! the client talks plain HTTP/2 to `http://HOST` with anonymous credentials; otherwise it uses
//! Google's endpoint and Application Default Credentials (on Cloud Run, the service account).
//!
//! A publish retries what the crate counts as transient (connection failures, `UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED`, `INTERNAL`, `DEADLINE_EXCEEDED`…) with exponential backoff, a few
//! times, and gives up after [`PUBLISH_TIMEOUT`] whatever happens, so a stuck publish cannot
//! hold a request forever. A publish that timed out may still reach the topic later (the
//! crate's background task keeps the batch): Pub/Sub delivery is at least once anyway.

use std::time::Duration;

use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::Publisher as Client;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;

/// The longest one publish may take, retries included.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per publish (the first one and its retries).
const ATTEMPTS: u32 = 6;

/// A client that publishes to one topic. Cheap to share behind an `Arc`; messages published at
/// about the same time go out in one batch (the crate waits up to 10 ms to fill one).
pub struct Publisher {
    topic: String,
    client: Client,
    timeout: Duration,
}

impl Publisher {
    /// `topic`: projects/P/topics/T. Honours PUBSUB_EMULATOR_HOST (plain HTTP, no credentials).
    pub async fn new(topic: &str) -> Result<Self, String> {
        let emulator = std::env::var("PUBSUB_EMULATOR_HOST").ok();
        Self::connect(topic, emulator.as_deref().filter(|h| !h.is_empty())).await
    }

    /// Like [`Publisher::new`], with the emulator's `HOST:PORT` given rather than read from the
    /// environment (`None`: Google's service).
    pub async fn connect(topic: &str, emulator_host: Option<&str>) -> Result<Self, String> {
        check_topic(topic)?;
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(200))
            .with_maximum_delay(Duration::from_secs(5))
            .with_scaling(2.0)
            .build()
            .map_err(|e| format!("Pub/Sub backoff: {e}"))?;
        let mut builder = Client::builder(topic)
            .with_retry_policy(
                RetryableErrors
                    .with_attempt_limit(ATTEMPTS)
                    .with_time_limit(PUBLISH_TIMEOUT),
            )
            .with_backoff_policy(backoff);
        if let Some(host) = emulator_host {
            builder = builder
                .with_endpoint(format!("http://{host}"))
                .with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
        }
        let client = builder
            .build()
            .await
            .map_err(|e| format!("Pub/Sub publisher for {topic}: {e}"))?;
        Ok(Self {
            topic: topic.to_owned(),
            client,
            timeout: PUBLISH_TIMEOUT,
        })
    }

    /// Gives up on a publish after `timeout` rather than [`PUBLISH_TIMEOUT`] (shorter only:
    /// the crate's own retries stop at [`PUBLISH_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Publishes one message; returns its message id.
    pub async fn publish(
        &self,
        data: Vec<u8>,
        attributes: Vec<(String, String)>,
    ) -> Result<String, String> {
        let message = Message::new().set_data(data).set_attributes(attributes);
        match tokio::time::timeout(self.timeout, self.client.publish(message)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(format!("publishing to {}: {e}", self.topic)),
            Err(_) => Err(format!(
                "publishing to {}: no answer within {:?}",
                self.topic, self.timeout
            )),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// `projects/P/topics/T` with non-empty P and T, nothing else.
fn check_topic(topic: &str) -> Result<(), String> {
    match topic.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => Ok(()),
        _ => Err(format!(
            "{topic:?} is not a topic name: expected projects/PROJECT/topics/TOPIC"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        assert!(check_topic("projects/p/topics/work").is_ok());
        for bad in [
            "work",
            "projects/p/topics/",
            "projects//topics/t",
            "projects/p/subscriptions/s",
            "projects/p/topics/t/x",
        ] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }
}
