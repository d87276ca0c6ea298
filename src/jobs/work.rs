//! Queue mode (`WORK_TOPIC`): a trigger only plans (probes the source, writes status.json
//! `queued`, and hands each unit of the plan to the queue as a `WorkUnit`); each unit then runs
//! inside the request that delivers it (`Worker`), on whichever instance that is, and leaves
//! its markers; `settle` publishes what the markers complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::markers::read_marker;
use super::plan::Plan;
use super::request::{Engine, JobRequest, Source};
use super::run::{Job, pass_memory};
use super::scratch;
use super::status::JobStatus;
use super::tracker::Tracker;
use super::units::Unit;
use crate::media::MediaError;
use crate::media::ladder::Tier;
use crate::media::pass::FrameRange;
use crate::media::source::SourceInfo;
use crate::storage::Store;

/// One unit of a planned video, as the queue carries it: everything a worker needs, so it reads
/// nothing else before it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkUnit {
    pub video_id: String,
    /// The source's key in the input store.
    pub input: String,
    /// The settings the plan was made under (`Plan::encoding`).
    pub encoding: String,
    pub tier: Tier,
    /// This unit among the video's `units`.
    pub index: usize,
    pub units: usize,
    /// Renditions it makes, as indices into the plan's renditions.
    pub members: Vec<usize>,
    /// The output frames it makes; `end` is `u64::MAX` for "to the end".
    pub range: FrameRange,
    /// Parts its renditions are made in.
    pub parts: u32,
    /// The probed source (status.json's `source`, without the stream indices)...
    pub source: SourceInfo,
    /// ...and the container's indices of its video stream and audio streams.
    pub video_stream: Option<usize>,
    pub audio_streams: Vec<usize>,
}

impl WorkUnit {
    /// `unit-3`: names the unit in logs, message attributes and its lease.
    pub fn name(&self) -> String {
        format!("unit-{}", self.index)
    }

    /// The plan it belongs to, as this instance's settings make it.
    pub(super) fn plan(&self, engine: &Engine) -> Plan {
        Plan::new(&self.source, &engine.settings)
    }

    /// The probed source, stream indices included.
    fn source_info(&self) -> SourceInfo {
        let mut info = self.source.clone();
        if let (Some(video), Some(index)) = (&mut info.video, self.video_stream) {
            video.stream_index = index;
        }
        for (audio, &index) in info.audio.iter_mut().zip(&self.audio_streams) {
            audio.stream_index = index;
        }
        info
    }

    pub(super) fn as_unit(&self) -> Unit {
        Unit {
            members: self.members.clone(),
            tier: self.tier,
            // One part: the whole length, as a pass without chunks makes it.
            range: (self.parts > 1).then_some(self.range),
            parts: self.parts,
        }
    }
}

/// The units of `plan` for video `video_id` from source key `input`, critical tier first, and
/// the parts each rendition is made in.
pub fn units_of(plan: &Plan, video_id: &str, input: &str, info: &SourceInfo) -> Vec<WorkUnit> {
    let all = plan.units(false);
    let count = all.len();
    all.into_iter()
        .enumerate()
        .map(|(index, unit)| WorkUnit {
            video_id: video_id.to_string(),
            input: input.to_string(),
            encoding: plan.encoding.clone(),
            tier: unit.tier,
            index,
            units: count,
            members: unit.members,
            range: unit.range.unwrap_or(FrameRange {
                index: 0,
                start: 0,
                end: u64::MAX,
            }),
            parts: unit.parts,
            source: info.clone(),
            video_stream: info.video.as_ref().map(|v| v.stream_index),
            audio_streams: info.audio.iter().map(|a| a.stream_index).collect(),
        })
        .collect()
}

/// Parts each rendition of `plan` is made in (the same order as its renditions).
pub fn parts_of(plan: &Plan) -> Vec<u32> {
    let mut parts = vec![1; plan.statuses.len()];
    for unit in plan.units(false) {
        for i in unit.members {
            parts[i] = unit.parts;
        }
    }
    parts
}

/// Probes `request`'s source and plans it: the `queued` status to write and the units to queue.
/// `Err`: why the source cannot be made (for status.json).
pub async fn plan(
    request: &JobRequest,
    engine: &Engine,
    cancel: &CancellationToken,
) -> Result<(JobStatus, Vec<WorkUnit>), String> {
    let Source::Object { key, .. } = &request.source else {
        return Err("only sources in the input store can be queued".into());
    };
    let mut queued = JobStatus::queued_from(&request.video_id, request.source.uri());
    queued.metadata = request.metadata.clone();
    let tracker = Arc::new(Tracker::new(queued.clone(), watch::channel(queued).0));
    let job = Job::new(request, engine, cancel, &tracker);
    let info = job.probe_source().await.map_err(|end| end.reason)?;
    let plan = Plan::new(&info, &engine.settings);
    let units = units_of(&plan, &request.video_id, key, &info);
    let mut status = tracker.snapshot();
    status.source = Some(info);
    status.encoding = Some(plan.encoding.clone());
    status.renditions = plan.statuses.clone();
    Ok((status, units))
}

/// How running a unit ended.
pub enum Ran {
    Done,
    Cancelled,
    /// Worth another delivery: the reason is kept for the dead-letter recorder.
    Failed(String),
}

/// Whether every rendition of `unit` has its marker, made under the unit's settings.
pub(super) async fn is_marked(store: &dyn Store, unit: &WorkUnit, plan: &Plan) -> bool {
    for &i in &unit.members {
        let name = &plan.statuses[i].name;
        let marker = read_marker(store, &unit.video_id, name, unit.range.index).await;
        if !matches!(marker, Ok(Some(m)) if m.encoding == unit.encoding) {
            return false;
        }
    }
    true
}

/// Encodes `unit` and writes its markers (no playlist or master: `settle` does those).
pub(super) async fn encode(
    unit: &WorkUnit,
    plan: &Plan,
    engine: &Engine,
    input: Arc<dyn Store>,
    output: Arc<dyn Store>,
    cancel: &CancellationToken,
) -> Ran {
    let request = JobRequest {
        video_id: unit.video_id.clone(),
        source: Source::Object {
            store: input,
            key: unit.input.clone(),
        },
        output,
        metadata: None,
        probe: Some(unit.source_info()),
    };
    let initial = JobStatus::queued_from(&unit.video_id, request.source.uri());
    let tracker = Arc::new(Tracker::new(initial.clone(), watch::channel(initial).0));
    let mut job = Job::new(&request, engine, cancel, &tracker);
    job.playlists_early = false;
    let counters = tracker.set_renditions(plan.statuses.clone());
    let scratch = match scratch::create(&engine.settings.scratch_dir, &unit.video_id) {
        Ok(scratch) => scratch,
        Err(e) => return Ran::Failed(format!("cannot create scratch space: {e}")),
    };
    if let Err(end) = job.probe_source().await {
        return match cancel.is_cancelled() {
            true => Ran::Cancelled,
            false => Ran::Failed(end.reason),
        };
    }
    let info = &unit.source_info();
    let members = &unit.members;
    let encoded = job
        .encode_pass(
            info,
            plan,
            members,
            &counters,
            scratch.path(),
            unit.as_unit().range,
        )
        .await;
    let results = match encoded {
        Ok((results, _)) => results,
        Err(end) => return Ran::Failed(end.reason),
    };
    let cpu = tracker.snapshot().cost.map_or(0.0, |c| c.cpu_seconds);
    let share = cpu / members.len().max(1) as f64;
    for (i, result) in results {
        let folder = scratch.path().join(&plan.statuses[i].name);
        let result = match result {
            Ok(codecs) => job.publish_rest(&folder).await.map(|()| codecs),
            Err(e) => Err(e),
        };
        let marked = match result {
            Ok(codecs) => {
                job.mark(plan, i, &unit.as_unit(), &folder, codecs.as_deref(), share)
                    .await
            }
            Err(e) => Err(e),
        };
        match marked {
            Ok(()) => {}
            Err(MediaError::Cancelled) => return Ran::Cancelled,
            Err(e) => {
                let name = &plan.statuses[i].name;
                return Ran::Failed(format!("{name} chunk {}: {e}", unit.range.index));
            }
        }
    }
    tracing::info!(
        memory_mib = pass_memory(info, plan, members) >> 20,
        "unit encoded"
    );
    Ran::Done
}

impl Job<'_> {
    /// Publishes the media files of rendition folder `folder` the pass left (its last segments,
    /// and the init segment of part 0), keeping their sizes for the marker; playlists and later
    /// parts' init segments stay (the markers carry those).
    async fn publish_rest(&self, folder: &Path) -> Result<(), MediaError> {
        let name = folder
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for file in files {
            let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name.ends_with(".m3u8") || file_name.starts_with("init-") {
                continue;
            }
            let size = std::fs::metadata(&file)?.len();
            let key = self.key(&format!("manifest/{name}/{file_name}"));
            self.store()
                .put_file(&key, &file)
                .await
                .map_err(|e| MediaError::Publish(format!("publishing {key}: {e}")))?;
            self.early_sizes.lock().expect("lock").insert(file, size);
        }
        Ok(())
    }
}
