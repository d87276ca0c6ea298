//! Units of work: one video × one pass (a tier, or every tier with a single decode) × one time
//! chunk of the source, the audio one unit of its own. A job runs all its units at once on the
//! shared pool, which starts them by tier, then arrival, then chunk index (they queue in that
//! order). A finished unit leaves a marker beside status.json; a rendition made in parts is
//! assembled from its parts' playlists once the last one is done.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::run::{Job, JobEnd, pass_memory};
use super::status::RenditionKind;
use crate::media::MediaError;
use crate::media::ladder::Tier;
use crate::media::mux::{INIT_SEGMENT, PLAYLIST, Part};
use crate::media::pass::FrameRange;
use crate::media::playlist::{MediaPlaylist, with_target_duration};
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
    /// pass's audio as its own unit after its first chunk.
    pub fn units(&self, merge: bool) -> Vec<Unit> {
        let mut units = Vec::new();
        for members in self.passes(merge) {
            let tier = members
                .iter()
                .map(|&i| self.statuses[i].tier)
                .min()
                .expect("a pass has members");
            let chunks = self.chunks(tier);
            let (audio, video): (Vec<usize>, Vec<usize>) = members
                .iter()
                .partition(|&&i| self.statuses[i].kind == RenditionKind::Audio);
            if chunks.len() == 1 || video.is_empty() {
                units.push(Unit {
                    members,
                    tier,
                    range: None,
                    parts: 1,
                });
                continue;
            }
            let parts = chunks.len() as u32;
            for (k, range) in chunks.into_iter().enumerate() {
                units.push(Unit {
                    members: video.clone(),
                    tier,
                    range,
                    parts,
                });
                if k == 0 && !audio.is_empty() {
                    units.push(Unit {
                        members: audio.clone(),
                        tier,
                        range: None,
                        parts: 1,
                    });
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
    restored: Mutex<std::collections::HashMap<usize, String>>,
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

/// A finished unit's record of one rendition, `videos/<id>/units/<rendition>-<k>.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    /// The encoding settings it was made under (status.json's `encoding`).
    encoding: String,
    rendition: String,
    chunk: u32,
    first_frame: u64,
    /// `null`: to the end of the source.
    end_frame: Option<u64>,
    segments: Vec<MarkedSegment>,
    peak_bits_per_second: u64,
    codecs: Option<String>,
    /// Size of the init segment, which part 0 publishes (0 otherwise).
    init_bytes: u64,
    /// The part's playlist, as the muxer finished it: a resumed run assembles from it.
    playlist: String,
}

#[derive(Serialize, Deserialize)]
struct MarkedSegment {
    uri: String,
    seconds: f64,
    bytes: u64,
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
        let grant = tokio::select! {
            grant = scheduler.acquire(unit.tier, encoders, memory) => grant,
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
                    .mark(plan, i, unit, &folder, codecs.as_deref())
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

    /// Takes rendition `i`'s part of `unit` from an earlier run's marker, if it has one made
    /// under this plan's settings over the same frames: its playlist goes back into scratch
    /// (its files are published already) and its frames count as done.
    async fn restore(
        &self,
        plan: &Plan,
        i: usize,
        unit: &Unit,
        book: &Book,
        counters: &[Arc<AtomicU64>],
        scratch: &Path,
    ) -> bool {
        let Some(range) = unit.range else {
            return false;
        };
        let name = &plan.statuses[i].name;
        let key = self.key(&marker_key(name, range.index));
        let Ok(Some(bytes)) = self.store().get(&key).await else {
            return false;
        };
        let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else {
            return false;
        };
        let end = (range.end != u64::MAX).then_some(range.end);
        if marker.encoding != plan.encoding
            || (marker.first_frame, marker.end_frame) != (range.start, end)
        {
            return false;
        }
        let folder = scratch.join(name);
        if std::fs::create_dir_all(&folder).is_err()
            || std::fs::write(folder.join(Part::playlist(range.index)), &marker.playlist).is_err()
        {
            return false;
        }
        let mut moved = self.early_sizes.lock().expect("lock");
        for s in &marker.segments {
            moved.insert(folder.join(&s.uri), s.bytes);
        }
        if range.index == 0 && marker.init_bytes > 0 {
            moved.insert(folder.join(INIT_SEGMENT), marker.init_bytes);
        }
        drop(moved);
        if let Some(codecs) = marker.codecs {
            book.restored.lock().expect("lock").insert(i, codecs);
        }
        let total = plan.statuses[i].frames_expected;
        let frames = range.end.min(total).saturating_sub(range.start);
        counters[i].fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Writes the marker of rendition `i`'s part made by `unit` (its part playlist is final).
    async fn mark(
        &self,
        plan: &Plan,
        i: usize,
        unit: &Unit,
        folder: &Path,
        codecs: Option<&str>,
    ) -> Result<(), MediaError> {
        let range = unit.range.unwrap_or(FrameRange {
            index: 0,
            start: 0,
            end: u64::MAX,
        });
        let text = std::fs::read_to_string(folder.join(Part::playlist(range.index)))?;
        let moved = self.early_sizes.lock().expect("lock").clone();
        let playlist = MediaPlaylist::parse(&only_segments(&text), folder, &moved)?;
        let uris = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        let segments = uris
            .zip(&playlist.segments)
            .map(|(uri, s)| MarkedSegment {
                uri: uri.to_string(),
                seconds: s.seconds,
                bytes: s.bytes,
            })
            .collect();
        let status = &plan.statuses[i];
        let init = folder.join(INIT_SEGMENT);
        let init_bytes = match range.index {
            0 => moved
                .get(&init)
                .copied()
                .or_else(|| std::fs::metadata(&init).ok().map(|m| m.len()))
                .unwrap_or(0),
            _ => 0,
        };
        let marker = Marker {
            encoding: plan.encoding.clone(),
            rendition: status.name.clone(),
            chunk: range.index,
            first_frame: range.start,
            end_frame: (range.end != u64::MAX).then_some(range.end),
            segments,
            peak_bits_per_second: playlist.rates().peak,
            codecs: codecs.map(str::to_string),
            init_bytes,
            playlist: text,
        };
        let key = marker_key(&status.name, range.index);
        let key = self.key(&key);
        let body = serde_json::to_vec_pretty(&marker).expect("serialisable");
        self.store()
            .put(&key, Bytes::from(body))
            .await
            .map_err(|e| MediaError::Publish(format!("writing {key}: {e}")))?;
        self.published.lock().expect("lock").push(key);
        Ok(())
    }

    /// Joins a rendition's `parts` into its final `index.m3u8` and checks that every part was
    /// encoded with part 0's codec configuration (players decode every segment with the one
    /// init segment); the parts' own playlists and init segments leave the folder.
    async fn assemble(&self, folder: &Path, parts: u32) -> Result<(), MediaError> {
        let (text, complete) = assembled(folder, parts)
            .ok_or_else(|| MediaError::Encode("a chunk's playlist is missing".into()))?;
        if !complete {
            return Err(MediaError::Encode("a chunk did not finish".into()));
        }
        let reference = match folder.join(Part::init(1)).exists() {
            true => self.published_init(folder).await,
            false => None, // MPEG-TS: no init segments
        };
        for k in 1..parts {
            let init = folder.join(Part::init(k));
            if let (Some(reference), Ok(bytes)) = (&reference, std::fs::read(&init))
                && avcc(&bytes) != avcc(reference)
            {
                return Err(MediaError::Encode(format!(
                    "chunk {k} was encoded with another codec configuration (SPS/PPS) than \
                     chunk 0: its segments cannot share one init segment"
                )));
            }
            let _ = std::fs::remove_file(&init);
        }
        let text = text
            .replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD")
            .replace("#EXT-X-ENDLIST\n", "")
            + "#EXT-X-ENDLIST\n";
        std::fs::write(folder.join(PLAYLIST), with_target_duration(&text))?;
        for k in 0..parts {
            let _ = std::fs::remove_file(folder.join(Part::playlist(k)));
        }
        Ok(())
    }

    /// Part 0's init segment, from scratch or, once published, from the output store.
    async fn published_init(&self, folder: &Path) -> Option<Vec<u8>> {
        if let Ok(bytes) = std::fs::read(folder.join(INIT_SEGMENT)) {
            return Some(bytes);
        }
        let name = folder.file_name()?.to_str()?;
        let key = self.key(&format!("manifest/{name}/{INIT_SEGMENT}"));
        let bytes = self.store().get(&key).await.ok().flatten()?;
        Some(bytes.to_vec())
    }
}

/// The `avcC` box of an fMP4 init segment, if any.
fn avcc(init: &[u8]) -> Option<&[u8]> {
    let at = init.windows(4).position(|w| w == b"avcC")?;
    let size = u32::from_be_bytes(init.get(at - 4..at)?.try_into().ok()?) as usize;
    init.get(at..at - 4 + size)
}

/// A part playlist's segment lines (EXTINF and URI) only.
fn only_segments(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("#EXTINF:") || (!l.starts_with('#') && !l.is_empty()))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The playlist of a rendition made in `parts`, as far as its parts go: part 0's header and
/// segments, then each later part's segments, stopping after the first part that has not
/// finished (its playlist has no end yet) or before one not started. `None` before part 0
/// has a playlist; `true` with it when every part has finished. The text carries no end tag.
pub fn assembled(folder: &Path, parts: u32) -> Option<(String, bool)> {
    let mut text = String::new();
    for k in 0..parts {
        let Ok(part) = std::fs::read_to_string(folder.join(Part::playlist(k))) else {
            return (k > 0).then_some((text, false));
        };
        if !part.starts_with("#EXTM3U") {
            return (k > 0).then_some((text, false));
        }
        if k == 0 {
            for line in part.lines().filter(|l| *l != "#EXT-X-ENDLIST") {
                text.push_str(line);
                text.push('\n');
            }
        } else {
            text.push_str(&only_segments(&part));
        }
        if !part.contains("#EXT-X-ENDLIST") {
            return Some((text, false));
        }
    }
    Some((text, true))
}

/// Where a unit's marker of rendition `name`, chunk `k`, lives under the video's folder.
fn marker_key(name: &str, k: u32) -> String {
    format!("units/{name}-{k}.json")
}
