//! Units of work: one video × one pass (a tier, or every tier with a single decode) × one time
//! chunk of the source, the audio one unit of its own. A job runs all its units at once on the
//! shared pool, which starts them by tier, then arrival, then chunk index (they queue in that
//! order). A finished unit leaves a marker beside status.json; a rendition made in parts is
//! assembled from its parts' playlists once the last one is done.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::plan::Plan;
use super::run::{Job, JobEnd, pass_memory};
use super::status::RenditionKind;
use crate::media::ladder::Tier;
use crate::media::pass::FrameRange;
use crate::media::source::SourceInfo;

/// One unit: renditions `members` of the plan, over `range` of the video (`None`: all).
#[derive(Clone, Debug)]
pub struct Unit {
    pub members: Vec<usize>,
    pub tier: Tier,
    pub range: Option<FrameRange>,
    /// Parts the members' renditions are made in (1: the whole length in one).
    pub parts: u32,
}

impl Plan {
    /// The job's units in the order they should start: each pass's chunks in order, a chunked
    /// pass's audio as its own unit after its first chunk. A merged pass (one decode for every
    /// tier) leads with one segment of its lowest tier's renditions alone, so they are playable
    /// after a few seconds of work instead of after the first segment of the largest; that
    /// segment of the other renditions follows, then one decode for all of them does the rest.
    pub fn units(&self, merge: bool) -> Vec<Unit> {
        let mut units = Vec::new();
        for members in self.passes(merge) {
            let tier = members
                .iter()
                .map(|&i| self.statuses[i].tier)
                .min()
                .expect("a pass has members");
            let (audio, video): (Vec<usize>, Vec<usize>) = members
                .iter()
                .partition(|&&i| self.statuses[i].kind == RenditionKind::Audio);
            let top = video.iter().map(|&i| self.statuses[i].tier).max();
            let lead = merge && top.is_some_and(|top| top != tier);
            // A merged pass's unit does its top tier's work too: its chunks are that tier's
            // length, so a new job's first tier never waits longer behind one than per tier.
            let chunks = self.chunks(top.unwrap_or(tier), lead);
            let whole = |members: Vec<usize>| Unit {
                members,
                tier,
                range: None,
                parts: 1,
            };
            if lead && self.video_frames() <= self.segment_frames {
                // Too short to lead with a segment: the lowest tier first, then the rest.
                let (first, rest): (Vec<usize>, Vec<usize>) = members
                    .iter()
                    .partition(|&&i| self.statuses[i].tier == tier);
                units.extend([whole(first), whole(rest)]);
                continue;
            }
            if chunks.len() == 1 || video.is_empty() {
                units.push(whole(members));
                continue;
            }
            let parts = chunks.len() as u32;
            for (k, range) in chunks.into_iter().enumerate() {
                let unit = |members: Vec<usize>| Unit {
                    members,
                    tier,
                    range,
                    parts,
                };
                if k == 0 && lead {
                    let (first, rest): (Vec<usize>, Vec<usize>) =
                        video.iter().partition(|&&i| self.statuses[i].tier == tier);
                    units.push(unit(first));
                    if !audio.is_empty() {
                        units.push(whole(audio.clone()));
                    }
                    // At the lowest tier too: it starts before the next chunk.
                    units.push(unit(rest));
                    continue;
                }
                units.push(unit(video.clone()));
                if k == 0 && !audio.is_empty() {
                    units.push(whole(audio.clone()));
                }
            }
        }
        units
    }
}

/// What the job's units have done, per rendition.
pub struct Book {
    parts_done: Mutex<Vec<u32>>,
    failed: Mutex<Vec<bool>>,
    /// An earlier run of the same source under the same settings left markers to keep.
    resuming: bool,
    /// Codecs of renditions from their kept markers.
    pub(super) restored: Mutex<std::collections::HashMap<usize, String>>,
}

impl Book {
    pub fn new(plan: &Plan, resuming: bool) -> Self {
        Self {
            parts_done: Mutex::new(vec![0; plan.statuses.len()]),
            failed: Mutex::new(vec![false; plan.statuses.len()]),
            resuming,
            restored: Mutex::default(),
        }
    }

    fn failed(&self, i: usize) -> bool {
        self.failed.lock().expect("lock")[i]
    }
}

impl Job<'_> {
    /// Runs one unit to its end: waits for its turn on the pool, encodes, and publishes every
    /// rendition this unit completes. True if the job was cancelled.
    pub(super) async fn run_unit(
        &self,
        info: &SourceInfo,
        plan: &Plan,
        unit: &Unit,
        book: &Book,
        counters: &[Arc<AtomicU64>],
        scratch: &Path,
    ) -> Result<bool, JobEnd> {
        // Renditions that failed in an earlier chunk are not encoded further.
        let mut members: Vec<usize> = unit
            .members
            .iter()
            .copied()
            .filter(|&i| !book.failed(i))
            .collect();
        let mut kept = Vec::new();
        if book.resuming && unit.parts > 1 {
            for &i in &members {
                if self.restore(plan, i, unit, book, counters, scratch).await {
                    kept.push(i);
                }
            }
            members.retain(|i| !kept.contains(i));
        }
        let chunk = unit.range.map_or(0, |r| r.index);
        if !kept.is_empty() {
            tracing::info!(
                chunk,
                renditions = kept.len(),
                "resuming: chunk kept from its markers"
            );
            metrics::counter!("transcoder_work_units_total", "result" => "kept").increment(1);
            let complete = self.count_parts(plan, book, unit, &kept, scratch).await;
            if !complete.is_empty() && self.conclude(plan, complete, 0.0, scratch).await? {
                return Ok(true);
            }
        }
        if members.is_empty() {
            return Ok(false);
        }
        let encoders = members
            .iter()
            .filter(|&&i| plan.videos[i].is_some())
            .count();
        let scheduler = &self.engine.scheduler;
        let memory = pass_memory(info, plan, &members);
        // A chunked video's audio unit takes no encoder from the pool: AAC costs a few percent
        // of one core, and the master names no video before the audio's first segment is out,
        // so queueing it behind the first video chunk would hold back first playback.
        let own_audio = encoders == 0 && plan.video_count() > 0;
        let grant = tokio::select! {
            grant = scheduler.acquire(unit.tier, encoders, memory), if !own_audio => grant.map(Some),
            () = std::future::ready(()), if own_audio => Ok(None),
            () = self.cancel.cancelled() => return Ok(true),
        };
        let _grant = match grant {
            Ok(grant) => grant,
            Err(reason) => {
                let mut failed = book.failed.lock().expect("lock");
                for &i in &members {
                    failed[i] = true;
                    self.fail_rendition(plan, i, &reason, scratch);
                }
                return Ok(false);
            }
        };
        if self.cancel.is_cancelled() {
            return Ok(true);
        }
        let (results, seconds) = self
            .encode_pass(info, plan, &members, counters, scratch, unit.range)
            .await?;
        if unit.parts == 1 {
            return self.conclude(plan, results, seconds, scratch).await;
        }
        metrics::counter!("transcoder_work_units_total", "result" => "done").increment(1);
        let mut complete = Vec::new();
        for (i, result) in results {
            let folder = scratch.join(&plan.statuses[i].name);
            let result = match result {
                Ok(codecs) => self
                    .mark(plan, i, unit, &folder, codecs.as_deref(), 0.0)
                    .await
                    .map(|()| codecs),
                Err(e) => Err(e),
            };
            let done = match &result {
                Ok(_) => {
                    let mut parts = book.parts_done.lock().expect("lock");
                    parts[i] += 1;
                    parts[i] == unit.parts
                }
                Err(e) => {
                    tracing::warn!(rendition = %plan.statuses[i].name, chunk, "chunk failed: {e}");
                    book.failed.lock().expect("lock")[i] = true;
                    true
                }
            };
            if done {
                let result = match result {
                    Ok(codecs) => self.assemble(&folder, unit.parts).await.map(|()| codecs),
                    Err(e) => Err(e),
                };
                complete.push((i, result));
            }
        }
        if complete.is_empty() {
            return Ok(false);
        }
        self.conclude(plan, complete, seconds, scratch).await
    }

    /// Counts a kept part of each of `kept`; the renditions this completes, assembled.
    async fn count_parts(
        &self,
        plan: &Plan,
        book: &Book,
        unit: &Unit,
        kept: &[usize],
        scratch: &Path,
    ) -> super::run::PassResults {
        let mut complete = Vec::new();
        for &i in kept {
            let done = {
                let mut parts = book.parts_done.lock().expect("lock");
                parts[i] += 1;
                parts[i] == unit.parts
            };
            if done {
                complete.push(i);
            }
        }
        let mut results = Vec::new();
        for i in complete {
            let folder = scratch.join(&plan.statuses[i].name);
            let codecs = book.restored.lock().expect("lock").get(&i).cloned();
            let result = self.assemble(&folder, unit.parts).await.map(|()| codecs);
            results.push((i, result));
        }
        results
    }
}
