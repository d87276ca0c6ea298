//! Job lifecycle: plan renditions, schedule decode passes on the shared encode pool, publish
//! HLS from each rendition's first segments on, and keep status.json honest throughout.

mod assembly;
pub mod cost;
mod download;
mod early;
mod fetch;
pub mod frames;
mod images;
mod lease;
mod markers;
mod outcome;
pub mod plan;
mod progressive;
#[cfg(test)]
mod progressive_tests;
pub mod publish;
pub mod registry;
pub mod request;
mod resume;
pub mod run;
pub mod scheduler;
pub mod scratch;
pub mod settle;
mod settled;
pub mod status;
pub mod tracker;
mod units;
pub mod watchdog;
pub mod work;
pub mod worker;

pub use registry::{AdmitError, Admitted, Jobs};
pub use request::{Engine, JobRequest, Source};
pub use run::run;
pub use status::{JobState, JobStatus};

/// A video id safe to use as a path component: 1–64 of `[A-Za-z0-9_-]`.
pub fn validate_video_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid video id (1-64 letters, digits, - or _)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn video_ids_cannot_escape_their_folder() {
        assert!(super::validate_video_id("3f1c-abc_9").is_ok());
        for bad in ["", "..", "a/b", "a\\b", "x.y", "é", &"a".repeat(65)] {
            assert!(super::validate_video_id(bad).is_err(), "{bad}");
        }
    }
}
