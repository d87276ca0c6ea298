//! Queue mode's transport: the settings that turn it on (`WORK_TOPIC`), handing a planned
//! video's units to Pub/Sub, and reading them back from its push deliveries. What a unit is and
//! how it runs is `jobs::work`'s.

pub mod envelope;
pub mod publisher;

use std::sync::Arc;

use clap::Args;

use crate::jobs::work::WorkUnit;
use crate::media::ladder::Tier;
use publisher::Publisher;

/// Queue settings. Without `WORK_TOPIC` every job runs in this process's pool.
#[derive(Clone, Debug, Default, Args)]
pub struct QueueSettings {
    /// Pub/Sub topic (`projects/P/topics/T`) that carries units of work: a trigger then only
    /// plans the video and publishes its units, and each unit runs inside the `POST /work`
    /// request that delivers it, on whichever instance that is. Unset: jobs run in this
    /// process (the local default).
    #[arg(long, env = "WORK_TOPIC")]
    pub work_topic: Option<String>,

    /// Topic for the critical tier's units (≤480p and the audio: what makes a video playable),
    /// with its own push subscription, so they never wait behind larger renditions' units.
    /// Unset: they go to `WORK_TOPIC`.
    #[arg(long, env = "WORK_TOPIC_CRITICAL", requires = "work_topic")]
    pub work_topic_critical: Option<String>,

    /// Seconds a unit's lease lasts unrenewed: after an instance is killed, another takes its
    /// units this long after its last renewal (renewed every third of it).
    #[arg(long, env = "WORK_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub work_lease_seconds: u64,

    /// Seconds a delivered unit waits for a free encoder (and memory) here before it is
    /// answered 429, for Pub/Sub to deliver again later, maybe to another instance.
    #[arg(long, env = "WORK_WAIT_SECONDS", default_value_t = 10)]
    pub work_wait_seconds: u64,
}

/// The topics units are published to.
pub struct Queue {
    work: Publisher,
    critical: Option<Publisher>,
}

impl Queue {
    /// The queue `settings` name, or `None` when queue mode is off.
    pub async fn open(settings: &QueueSettings) -> Result<Option<Arc<Self>>, String> {
        let Some(topic) = &settings.work_topic else {
            return Ok(None);
        };
        let critical = match &settings.work_topic_critical {
            Some(topic) => Some(Publisher::new(topic).await?),
            None => None,
        };
        Ok(Some(Arc::new(Self {
            work: Publisher::new(topic).await?,
            critical,
        })))
    }

    /// Publishes `unit` to its tier's topic.
    pub async fn publish(&self, unit: &WorkUnit) -> Result<(), String> {
        let publisher = match (unit.tier, &self.critical) {
            (Tier::Critical, Some(critical)) => critical,
            _ => &self.work,
        };
        let data = serde_json::to_vec(unit).expect("serialisable");
        let attributes = vec![
            ("video_id".to_string(), unit.video_id.clone()),
            ("tier".to_string(), unit.tier.as_str().to_string()),
            ("unit".to_string(), unit.name()),
        ];
        let id = publisher.publish(data, attributes).await?;
        tracing::debug!(message_id = %id, topic = publisher.topic(), unit = %unit.name(), "unit queued");
        Ok(())
    }
}
