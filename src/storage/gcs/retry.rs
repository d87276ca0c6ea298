//! How the Cloud Storage client retries: its own rules for transient faults, bounded, and logged.

use std::time::Duration;

use google_cloud_gax::error::Error as GcsError;
use google_cloud_gax::exponential_backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use google_cloud_gax::retry_policy::{RetryPolicy, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;
use google_cloud_storage::retry_policy::RetryableErrors;

/// The client's retry rules for transient faults (429, 5xx, resets, timeouts: exponential backoff
/// with jitter), bounded in time and attempts, with every retry logged.
#[derive(Debug)]
pub(super) struct LoggedRetries {
    inner: Box<dyn RetryPolicy>,
}

impl LoggedRetries {
    pub(super) fn new(budget: Duration) -> Self {
        Self {
            inner: Box::new(
                RetryableErrors
                    .with_attempt_limit(12)
                    .with_time_limit(budget),
            ),
        }
    }
}

impl RetryPolicy for LoggedRetries {
    fn on_error(&self, state: &RetryState, error: GcsError) -> RetryResult {
        let result = self.inner.on_error(state, error);
        match &result {
            RetryResult::Continue(e) => tracing::warn!(
                attempt = state.attempt_count,
                "Cloud Storage call failed, retrying: {e}"
            ),
            RetryResult::Exhausted(e) => tracing::error!(
                attempt = state.attempt_count,
                "Cloud Storage call failed, no retries left: {e}"
            ),
            RetryResult::Permanent(_) => {}
        }
        result
    }

    fn remaining_time(&self, state: &RetryState) -> Option<Duration> {
        self.inner.remaining_time(state)
    }
}

/// Waits between attempts: from 0.5 s, doubling, at most 16 s, with jitter.
pub(super) fn backoff() -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(500))
        .with_maximum_delay(Duration::from_secs(16))
        .with_scaling(2.0)
        .clamp()
}
