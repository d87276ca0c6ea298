//! A unit's lease: while one instance encodes a unit, `videos/<id>/leases/<unit>.json` names it
//! and an expiry it keeps moving forward, so a redelivery of the same unit to another instance
//! waits (429) instead of encoding the same files at once. Every write is conditional on the
//! version read, so of two writers exactly one wins; a renewal whose answer was lost finds its
//! own name on the re-read and goes on. A lease not renewed (its instance was killed) expires
//! and the next delivery takes it. The record also keeps the unit's last failure, for the
//! dead-letter recorder.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::storage::{Store, StoreError, Version};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    owner: String,
    expires: DateTime<Utc>,
    /// How the last attempt at the unit failed, if it did.
    #[serde(default)]
    last_error: Option<String>,
    /// Runs of the unit that ended in an error, and runs whose instance stopped before they
    /// ended (found when another instance takes the lapsed lease over).
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    crashes: u32,
    /// The last holder gave it up (its run ended, one way or another).
    #[serde(default)]
    released: bool,
}

/// What the lease record says of a unit's past runs: how many went wrong, and how.
#[derive(Debug, Default)]
pub struct History {
    pub failures: u32,
    pub crashes: u32,
    pub last_error: Option<String>,
}

/// A lease this instance holds.
pub struct Lease {
    store: Arc<dyn Store>,
    key: String,
    record: Record,
    version: Version,
    ttl: Duration,
}

/// What asking for a lease led to.
pub enum Leased {
    Taken(Lease),
    /// Another instance holds it for this long yet.
    Held(Duration),
}

impl Record {
    /// No holder and no history: a unit never leased (or a record that does not parse).
    fn vacant() -> Self {
        Self {
            owner: String::new(),
            expires: DateTime::UNIX_EPOCH,
            last_error: None,
            failures: 0,
            crashes: 0,
            released: true,
        }
    }
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

async fn read(store: &dyn Store, key: &str) -> Result<Option<(Record, Version)>, StoreError> {
    Ok(store.get_versioned(key).await?.map(|(bytes, version)| {
        let record = serde_json::from_slice(&bytes).unwrap_or_else(|_| Record::vacant());
        (record, version)
    }))
}

/// Takes the lease at `key` for `owner` unless another owner's is still running.
pub async fn take(
    store: &Arc<dyn Store>,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Leased, StoreError> {
    loop {
        let (mut record, version) = match read(store.as_ref(), key).await? {
            Some((held, _)) if held.owner != owner && held.expires > Utc::now() => {
                let left = (held.expires - Utc::now()).to_std().unwrap_or_default();
                return Ok(Leased::Held(left));
            }
            Some((held, version)) => (held, version),
            None => (Record::vacant(), 0),
        };
        if !record.released && record.owner != owner {
            record.crashes += 1; // its holder never said how the run ended
        }
        record.owner = owner.to_string();
        record.expires = expiry(ttl);
        record.released = false;
        let body = Bytes::from(serde_json::to_vec(&record).expect("serialisable"));
        match store.put_if(key, body, version).await {
            Ok(version) => {
                return Ok(Leased::Taken(Lease {
                    store: store.clone(),
                    key: key.to_string(),
                    record,
                    version,
                    ttl,
                }));
            }
            Err(StoreError::Changed(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How the runs of the unit whose lease is at `key` went wrong, if any did.
pub async fn history(store: &dyn Store, key: &str) -> Result<History, StoreError> {
    Ok(match read(store, key).await? {
        Some((record, _)) => History {
            failures: record.failures,
            crashes: record.crashes + u32::from(!record.released),
            last_error: record.last_error,
        },
        None => History::default(),
    })
}

impl Lease {
    /// Renews the lease every third of its length until `stop`; fires `lost` (and returns) if
    /// another instance took it meanwhile (this one stalled past the expiry).
    pub async fn keep(mut self, stop: CancellationToken, lost: CancellationToken) -> Self {
        loop {
            tokio::select! {
                () = stop.cancelled() => return self,
                () = tokio::time::sleep(self.ttl / 3) => {}
            }
            match self.write(expiry(self.ttl)).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = %self.key, "another instance took the unit's lease");
                    lost.cancel();
                    return self;
                }
                // The store is down: the next renewal tries again, well before the expiry.
                Err(e) => tracing::warn!(key = %self.key, "renewing the unit's lease: {e}"),
            }
        }
    }

    /// Gives the lease up at once, recording `error` as a failed run.
    pub async fn release(mut self, error: Option<String>) {
        if error.is_some() {
            self.record.failures += 1;
            self.record.last_error = error;
        }
        self.record.released = true;
        if let Err(e) = self.write(Utc::now()).await {
            tracing::warn!(key = %self.key, "releasing the unit's lease: {e}");
        }
    }

    /// Writes the record with `expires` on the version held; false if the lease is another's.
    async fn write(&mut self, expires: DateTime<Utc>) -> Result<bool, StoreError> {
        self.record.expires = expires;
        let body = Bytes::from(serde_json::to_vec(&self.record).expect("serialisable"));
        match self
            .store
            .put_if(&self.key, body.clone(), self.version)
            .await
        {
            Ok(version) => {
                self.version = version;
                Ok(true)
            }
            Err(StoreError::Changed(_)) => {
                // Our own earlier write may have landed with its answer lost: still ours.
                match read(self.store.as_ref(), &self.key).await? {
                    Some((held, version)) if held.owner == self.record.owner => {
                        self.version = version;
                        self.store
                            .put_if(&self.key, body, version)
                            .await
                            .map(|v| self.version = v)
                            .map(|()| true)
                            .or_else(|e| match e {
                                StoreError::Changed(_) => Ok(false),
                                e => Err(e),
                            })
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()).unwrap());
        (dir, store)
    }

    const KEY: &str = "videos/v/leases/unit-0.json";
    const TTL: Duration = Duration::from_secs(60);

    async fn taken(store: &Arc<dyn Store>, owner: &str) -> Lease {
        match take(store, KEY, owner, TTL).await.unwrap() {
            Leased::Taken(lease) => lease,
            Leased::Held(_) => panic!("{owner} could not take the lease"),
        }
    }

    #[tokio::test]
    async fn one_owner_at_a_time_and_a_released_lease_is_free_at_once() {
        let (_dir, store) = store();
        let a = taken(&store, "a").await;
        match take(&store, KEY, "b", TTL).await.unwrap() {
            Leased::Held(left) => assert!(left > Duration::from_secs(50), "{left:?}"),
            Leased::Taken(_) => panic!("b took a lease a holds"),
        }
        a.release(Some("it broke".into())).await;
        let b = taken(&store, "b").await;
        b.release(None).await;
        let history = history(store.as_ref(), KEY).await.unwrap();
        assert_eq!((history.failures, history.crashes), (1, 0));
        assert_eq!(history.last_error.as_deref(), Some("it broke"));
    }

    #[tokio::test]
    async fn a_run_whose_instance_stopped_counts_as_a_crash() {
        let (_dir, store) = store();
        let mut a = taken(&store, "a").await;
        let held = history(store.as_ref(), KEY).await.unwrap();
        assert_eq!(
            held.crashes, 1,
            "a lease still held is a run not ended (yet)"
        );
        assert!(a.write(Utc::now()).await.unwrap()); // then `a` is killed: the lease lapses
        let b = taken(&store, "b").await;
        b.release(None).await;
        let history = history(store.as_ref(), KEY).await.unwrap();
        assert_eq!((history.failures, history.crashes), (0, 1));
        assert_eq!(history.last_error, None);
    }

    #[tokio::test]
    async fn a_renewal_whose_answer_was_lost_keeps_the_lease() {
        let (_dir, store) = store();
        let mut a = taken(&store, "a").await;
        // The renewal landed but its answer was lost: the version `a` holds is out of date.
        let stale = a.version;
        assert!(a.write(expiry(TTL)).await.unwrap());
        a.version = stale;
        assert!(
            a.write(expiry(TTL)).await.unwrap(),
            "its own write is no loss"
        );
        assert!(matches!(
            take(&store, KEY, "b", TTL).await.unwrap(),
            Leased::Held(_)
        ));
    }

    #[tokio::test]
    async fn a_lease_taken_over_after_it_lapsed_is_not_released_by_its_old_owner() {
        let (_dir, store) = store();
        let mut a = taken(&store, "a").await;
        // `a` stalls past its expiry; `b` takes the lease over.
        assert!(a.write(Utc::now()).await.unwrap());
        let _b = taken(&store, "b").await;
        assert!(
            !a.write(expiry(TTL)).await.unwrap(),
            "a renewal of a lost lease fails"
        );
        a.release(None).await;
        assert!(
            matches!(take(&store, KEY, "c", TTL).await.unwrap(), Leased::Held(_)),
            "the old owner's release must leave b's lease standing"
        );
    }
}
