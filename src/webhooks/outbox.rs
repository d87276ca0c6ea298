//! The outbox: one object per event and receiver in the output store
//! (`webhooks/outbox/<event-id>-<receiver>.json`), written before the first attempt and removed
//! once delivered or given up, so deliveries survive restarts and any instance may retry them.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{Store, StoreError};

/// The folder of the outbox in the output store.
pub const FOLDER: &str = "webhooks/outbox/";

/// How long an event is retried after it was made.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// One event on its way to one receiver.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    /// The JSON body, byte for byte the same on every attempt.
    pub body: String,
    pub created: DateTime<Utc>,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the next attempt is due; set before an attempt starts, so an instance that dies
    /// mid-attempt leaves the entry to be retried then (by any instance).
    pub next_attempt: DateTime<Utc>,
}

impl Entry {
    pub fn key(&self) -> String {
        format!(
            "{FOLDER}{}-{:08x}.json",
            self.event_id,
            crc32c::crc32c(self.url.as_bytes())
        )
    }

    fn bytes(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("an entry serialises")
            .into()
    }

    /// Whether the event is older than [`GIVE_UP_AFTER`].
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now - self.created > chrono::Duration::from_std(GIVE_UP_AFTER).expect("fits")
    }

    /// Counts an attempt starting `now` and sets when the next is due if this one fails.
    fn start_attempt(&mut self, now: DateTime<Utc>, base: Duration) {
        self.attempts += 1;
        let wait = delay(base, self.attempts, fastrand::f64());
        self.next_attempt = now + chrono::Duration::from_std(wait).expect("at most an hour");
    }
}

/// The wait after failed attempt number `attempt` (1, 2, …): `base` doubling with each
/// attempt, at most an hour, scaled by `0.5 + jitter / 2` for `jitter` in 0..1, so receivers
/// that failed together are not retried together.
pub fn delay(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1 << attempt.saturating_sub(1).min(20));
    doubled
        .min(MAX_DELAY)
        .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// Writes a new entry whose first attempt starts now; `false` if the event is already in the
/// outbox (made twice: the first stands).
pub async fn add(store: &dyn Store, entry: &mut Entry, base: Duration) -> Result<bool, StoreError> {
    entry.start_attempt(Utc::now(), base);
    match store.put_if(&entry.key(), entry.bytes(), 0).await {
        Ok(_) => Ok(true),
        Err(StoreError::Changed(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What reading one outbox entry found.
pub enum Found {
    /// Due, and now this caller's to attempt (its next attempt is already rescheduled).
    Taken(Entry),
    /// Not due until then, or taken by someone else meanwhile.
    Later(Option<DateTime<Utc>>),
    /// Unreadable or gone.
    Nothing,
}

/// Takes the entry at `key` for an attempt if it is due: the rescheduled entry is written only
/// if nobody changed it since it was read, so of several instances one gets it.
pub async fn take(store: &dyn Store, key: &str, base: Duration) -> Result<Found, StoreError> {
    let Some((bytes, version)) = store.get_versioned(key).await? else {
        return Ok(Found::Nothing);
    };
    let Ok(mut entry) = serde_json::from_slice::<Entry>(&bytes) else {
        tracing::warn!(key, "removing an unreadable webhook outbox entry");
        store.delete(key).await?;
        return Ok(Found::Nothing);
    };
    let now = Utc::now();
    if entry.next_attempt > now {
        return Ok(Found::Later(Some(entry.next_attempt)));
    }
    entry.start_attempt(now, base);
    match store.put_if(key, entry.bytes(), version).await {
        Ok(_) => Ok(Found::Taken(entry)),
        Err(StoreError::Changed(_)) => Ok(Found::Later(None)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_an_hour_within_their_jitter() {
        let base = Duration::from_secs(30);
        let nominal: Vec<u64> = (1..=10).map(|n| delay(base, n, 1.0).as_secs()).collect();
        assert_eq!(
            nominal,
            [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
        assert_eq!(delay(base, 1, 0.0), Duration::from_secs(15));
        assert_eq!(delay(base, 1000, 0.0), Duration::from_secs(1800));
    }

    #[tokio::test]
    async fn an_entry_is_taken_once_when_due_and_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::LocalStore::new(dir.path()).unwrap();
        let base = Duration::from_millis(1);
        let mut entry = Entry {
            event_id: "e1".into(),
            kind: "video.ready".into(),
            url: "http://a.example/".into(),
            body: "{}".into(),
            created: Utc::now(),
            attempts: 0,
            next_attempt: Utc::now(),
        };
        assert!(add(&store, &mut entry, base).await.unwrap());
        assert!(!add(&store, &mut entry.clone(), base).await.unwrap());
        assert_eq!(store.list(FOLDER).await.unwrap(), [entry.key()]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Found::Taken(taken) = take(&store, &entry.key(), base).await.unwrap() else {
            panic!("a due entry is taken");
        };
        assert_eq!(taken.attempts, 2);
        let slow = Duration::from_secs(60);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            take(&store, &entry.key(), slow).await.unwrap(),
            Found::Taken(_)
        ));
        assert!(matches!(
            take(&store, &entry.key(), slow).await.unwrap(),
            Found::Later(Some(_))
        ));
    }
}
