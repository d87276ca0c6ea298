//! One encode per video across instances: before a job starts, its instance creates
//! `videos/<id>/claim.json` beside status.json with a conditional write that only one writer can
//! win (GCS `ifGenerationMatch=0`). The claim names its owner and expires unless renewed, so a
//! crashed instance's claim is taken over after `CLAIM_TTL`; a finished job releases it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::publish;
use crate::storage::{Store, StoreError, Version};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// The instance holding the claim (a random id per process).
    owner: String,
    /// The source being encoded, so another source for the same video is a conflict.
    input: String,
    expires: DateTime<Utc>,
}

/// A claim this instance holds.
#[derive(Debug)]
pub struct Claim {
    store: Arc<dyn Store>,
    key: String,
    record: Record,
    version: Version,
    ttl: Duration,
}

/// What taking a claim led to.
#[derive(Debug)]
pub enum Taken {
    /// This instance may encode the video.
    Won(Claim),
    /// Another live instance is encoding it, from `input`.
    Held { owner: String, input: String },
}

/// Claims `video_id` for `owner`, who will encode it from `input`. `abandoned`: the video's
/// status.json shows its job stopped (not rewritten for a minute), so a claim still held by
/// another instance is taken over without waiting for it to expire.
pub async fn take(
    store: &Arc<dyn Store>,
    video_id: &str,
    input: &str,
    owner: &str,
    ttl: Duration,
    abandoned: bool,
) -> Result<Taken, StoreError> {
    let key = publish::key(video_id, "claim.json");
    let mut claim = Claim {
        store: store.clone(),
        key,
        record: Record {
            owner: owner.into(),
            input: input.into(),
            expires: Utc::now(),
        },
        version: 0,
        ttl,
    };
    // Each round either wins, finds a live claim, or lost a race and looks again.
    for _ in 0..3 {
        match claim.write().await {
            Ok(()) => return Ok(Taken::Won(claim)),
            Err(StoreError::Changed(_)) => {}
            Err(e) => return Err(e),
        }
        let Some((bytes, version)) = store.get_versioned(&claim.key).await? else {
            claim.version = 0;
            continue;
        };
        claim.version = version;
        match serde_json::from_slice::<Record>(&bytes) {
            // A retried create that did succeed, or this instance's own earlier claim.
            Ok(held) if held.owner == owner && held.input == input => {
                return Ok(Taken::Won(claim));
            }
            Ok(held) if held.expires > Utc::now() && !abandoned => {
                return Ok(Taken::Held {
                    owner: held.owner,
                    input: held.input,
                });
            }
            Ok(stale) => {
                tracing::info!(owner = %stale.owner, "taking over the claim of a stopped job");
            }
            Err(e) => tracing::warn!("replacing a claim that does not parse: {e}"),
        }
    }
    Err(StoreError::Changed(claim.key))
}

/// The source a live claim on `video_id` encodes from, if another instance holds one (a job
/// that has not written its first status.json yet).
pub async fn holder(store: &dyn Store, video_id: &str) -> Option<String> {
    let key = publish::key(video_id, "claim.json");
    let bytes = store.get(&key).await.ok()??;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    (record.expires > Utc::now()).then_some(record.input)
}

impl Claim {
    /// Extends the claim by its time to live; `Changed` means another instance took it over.
    async fn renew(&mut self) -> Result<(), StoreError> {
        self.write().await
    }

    /// How often to renew: well within the time to live.
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Renews the claim until `done`, then releases it. If another instance took it over (this
    /// one stalled past the time to live), `job` is cancelled: that instance encodes now.
    pub async fn keep(mut self, done: CancellationToken, job: CancellationToken) {
        loop {
            tokio::select! {
                () = done.cancelled() => return self.release().await,
                () = tokio::time::sleep(self.renew_every()) => {}
            }
            match self.renew().await {
                Ok(()) => {}
                Err(StoreError::Changed(_)) => {
                    tracing::error!("another instance took over this video's claim; stopping");
                    return job.cancel();
                }
                Err(e) => tracing::warn!("renewing the claim: {e}"),
            }
        }
    }

    /// Gives the claim up, so a later trigger can start at once; a job leaves nothing but its
    /// output and status.json behind.
    pub async fn release(self) {
        if let Err(e) = self.store.delete(&self.key).await {
            tracing::warn!("releasing the claim: {e}");
        }
    }

    /// Writes the record with a new expiry over exactly the version this claim last saw.
    async fn write(&mut self) -> Result<(), StoreError> {
        self.record.expires = Utc::now() + self.ttl;
        let bytes = serde_json::to_vec(&self.record).expect("claim serialises");
        self.version = self
            .store
            .put_if(&self.key, bytes.into(), self.version)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test]
    async fn one_owner_at_a_time_until_the_claim_expires_or_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let minute = Duration::from_secs(60);

        let Taken::Won(first) = take(&store, "v", "in/a.mp4", "one", minute, false)
            .await
            .unwrap()
        else {
            panic!("the first claim wins");
        };
        let second = take(&store, "v", "in/a.mp4", "two", minute, false)
            .await
            .unwrap();
        assert!(
            matches!(&second, Taken::Held { owner, .. } if owner == "one"),
            "{second:?}"
        );
        // The owner asking again (a redelivered trigger) keeps it.
        let again = take(&store, "v", "in/a.mp4", "one", minute, false)
            .await
            .unwrap();
        assert!(matches!(again, Taken::Won(_)), "{again:?}");

        first.release().await;
        let after = take(&store, "v", "in/a.mp4", "two", minute, false)
            .await
            .unwrap();
        let Taken::Won(mut taken) = after else {
            panic!("a released claim can be taken: {after:?}");
        };
        taken.renew().await.unwrap();

        // A claim whose owner stopped renewing is taken over once it expires.
        let short = Duration::from_millis(1);
        let Taken::Won(_) = take(&store, "w", "in/b.mp4", "crashed", short, false)
            .await
            .unwrap()
        else {
            panic!("first claim on w");
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let over = take(&store, "w", "in/b.mp4", "live", minute, false)
            .await
            .unwrap();
        assert!(matches!(over, Taken::Won(_)), "{over:?}");

        // A live claim of a job whose status.json went stale (its instance was killed).
        let killed = take(&store, "w", "in/b.mp4", "next", minute, false)
            .await
            .unwrap();
        assert!(matches!(killed, Taken::Held { .. }), "{killed:?}");
        let resumed = take(&store, "w", "in/b.mp4", "next", minute, true)
            .await
            .unwrap();
        assert!(matches!(resumed, Taken::Won(_)), "{resumed:?}");
    }
}
