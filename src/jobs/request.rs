//! What a job is asked to do (`JobRequest`: a source and an output store) and what every job
//! on this instance runs with (`Engine`: the settings and the shared encode pool).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::scheduler::{MemoryProbe, Scheduler};
use super::watchdog::Limits;
use crate::config::TranscodeSettings;
use crate::media::source::SourceInfo;
use crate::storage::Store;

/// Where a job's source is.
#[derive(Clone, Debug)]
pub enum Source {
    /// A local file named on the command line.
    File(PathBuf),
    /// An object in the input store.
    Object { store: Arc<dyn Store>, key: String },
}

impl Source {
    /// Names the source in status.json; equal names mean the same source. An object in a
    /// bucket is `gs://bucket/key`; in a local store just its key (no server paths shown).
    pub fn uri(&self) -> String {
        match self {
            Source::File(path) => format!("file:{}", path.display()),
            Source::Object { store, key } => match store.bucket() {
                Some(_) => format!("{}/{key}", store.describe()),
                None => key.clone(),
            },
        }
    }
}

/// One video to transcode into the output store.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub video_id: String,
    pub source: Source,
    pub output: Arc<dyn Store>,
    /// The uploader's metadata object, copied into status.json.
    pub metadata: Option<serde_json::Value>,
    /// The source as already probed (under the same limits) by whoever queued the job, so it
    /// is not read twice; `None`: the job probes it and reports any problem.
    pub probe: Option<SourceInfo>,
}

/// What every job on this instance runs with: the settings and the shared encode pool.
#[derive(Clone)]
pub struct Engine {
    pub settings: Arc<TranscodeSettings>,
    pub scheduler: Arc<Scheduler>,
}

impl Engine {
    /// An engine whose pool keeps `memory_reserve` bytes free, as `memory` reads them.
    pub fn new(
        settings: TranscodeSettings,
        memory: Arc<dyn MemoryProbe>,
        memory_reserve: u64,
    ) -> Self {
        let capacity = settings.max_parallel_encodes as usize;
        let wait = Duration::from_secs(settings.rendition_timeout);
        Self {
            settings: Arc::new(settings),
            scheduler: Scheduler::new(capacity, memory, memory_reserve, wait),
        }
    }

    /// The watchdog's limits for a source of `duration_seconds`.
    pub fn limits(&self, duration_seconds: f64) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.settings.rendition_timeout)
                + Duration::from_secs_f64(duration_seconds.max(0.0)),
            stall: Duration::from_secs(self.settings.stall_timeout),
        }
    }
}
