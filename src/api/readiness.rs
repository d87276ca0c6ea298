//! The slow part of `/readyz` (the stores and the scratch disk), checked at most once per
//! `REFRESH` and shared by every caller: the route is open to anyone, and the output check
//! writes to the bucket, so a caller must not be able to make the service write at will.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::AppState;

/// How long a check's outcome is served before the next call makes a new one.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The outcome of each slow check: `Err` says why it failed.
#[derive(Clone)]
pub struct Checks {
    pub input: Result<(), String>,
    pub output: Result<(), String>,
    pub disk: Result<(), String>,
}

/// The last checks and when they were made.
#[derive(Default)]
pub struct Readiness {
    /// Held while checking, so callers arriving meanwhile wait for that check instead of
    /// starting their own.
    last: Mutex<Option<(Instant, Checks)>>,
}

impl Readiness {
    /// The latest checks, made now if the last ones are older than `REFRESH`.
    pub async fn checks(&self, state: &AppState) -> Checks {
        let mut last = self.last.lock().await;
        if let Some((at, checks)) = last.as_ref()
            && at.elapsed() < REFRESH
        {
            return checks.clone();
        }
        let checks = Checks {
            input: answered_soon(state.input.check_readable()).await,
            output: answered_soon(state.output().check_writable()).await,
            disk: disk_check(state).await,
        };
        *last = Some((Instant::now(), checks.clone()));
        checks
    }
}

/// Enough free space for scratch, read on the blocking pool (it lists the machine's disks).
async fn disk_check(state: &AppState) -> Result<(), String> {
    let scratch = state.settings.transcode.scratch_dir.clone();
    let minimum = state.settings.min_disk_space;
    let path = scratch.clone();
    let free = tokio::task::spawn_blocking(move || crate::storage::free_disk_bytes(&path))
        .await
        .ok()
        .flatten();
    match free {
        Some(free) if free >= minimum => Ok(()),
        Some(free) => Err(format!(
            "{free} bytes free under {}, below MIN_DISK_SPACE ({minimum})",
            scratch.display()
        )),
        None => Err(format!("no disk found for {}", scratch.display())),
    }
}

/// A store check's outcome, or a failure if the store does not answer within a few seconds (a
/// bucket that is down is retried far longer than a probe waits).
async fn answered_soon(
    check: impl Future<Output = Result<(), crate::storage::StoreError>>,
) -> Result<(), String> {
    const PATIENCE: Duration = Duration::from_secs(3);
    match tokio::time::timeout(PATIENCE, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PATIENCE.as_secs())),
    }
}
