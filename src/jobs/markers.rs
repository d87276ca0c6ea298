//! Unit markers: a finished unit's record of each rendition it made, beside status.json, from
//! which a resumed run takes the unit back instead of encoding it again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::assembly::{avcc as avcc_box, only_segments};
use super::plan::Plan;
use super::publish;
use super::run::Job;
use super::units::{Book, Unit};
use crate::media::MediaError;
use crate::media::mux::{INIT_SEGMENT, PLAYLIST, Part};
use crate::media::pass::FrameRange;
use crate::media::playlist::MediaPlaylist;
use crate::storage::{Store, StoreError};

/// A finished unit's record of one rendition, `videos/<id>/units/<rendition>-<k>.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Marker {
    /// The encoding settings it was made under (status.json's `encoding`).
    pub(super) encoding: String,
    rendition: String,
    chunk: u32,
    pub(super) first_frame: u64,
    /// `null`: to the end of the source.
    pub(super) end_frame: Option<u64>,
    pub(super) segments: Vec<MarkedSegment>,
    peak_bits_per_second: u64,
    pub(super) codecs: Option<String>,
    /// Size of the init segment, which part 0 publishes (0 otherwise).
    pub(super) init_bytes: u64,
    /// The part's playlist, as the muxer finished it: a resumed run assembles from it.
    pub(super) playlist: String,
    /// The part's codec configuration (the init segment's `avcC` box, hex; fMP4 video only):
    /// every part must match part 0's, whose init segment all of them play with.
    #[serde(default)]
    pub(super) avcc: Option<String>,
    /// CPU seconds of the unit that made it, its share for this rendition (0: not measured).
    #[serde(default)]
    pub(super) cpu_seconds: f64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct MarkedSegment {
    pub(super) uri: String,
    pub(super) seconds: f64,
    pub(super) bytes: u64,
}

impl Job<'_> {
    /// Takes rendition `i`'s part of `unit` from an earlier run's marker, if it has one made
    /// under this plan's settings over the same frames: its playlist goes back into scratch
    /// (its files are published already) and its frames count as done.
    pub(super) async fn restore(
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
        let video_id = &self.request.video_id;
        let Ok(Some(marker)) = read_marker(self.store(), video_id, name, range.index).await else {
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
    pub(super) async fn mark(
        &self,
        plan: &Plan,
        i: usize,
        unit: &Unit,
        folder: &Path,
        codecs: Option<&str>,
        cpu_seconds: f64,
    ) -> Result<(), MediaError> {
        let range = unit.range.unwrap_or(FrameRange {
            index: 0,
            start: 0,
            end: u64::MAX,
        });
        let name = match unit.range {
            Some(range) => Part::playlist(range.index),
            None => PLAYLIST.to_string(), // the whole length in one
        };
        let text = std::fs::read_to_string(folder.join(name))?;
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
        let avcc = match range.index {
            0 => self.published_init(folder).await,
            k => std::fs::read(folder.join(Part::init(k))).ok(),
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
            avcc: avcc.as_deref().and_then(avcc_box).map(hex::encode),
            cpu_seconds,
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
}

/// Video `video_id`'s marker of rendition `name`, chunk `k`, if it has one that parses.
pub(super) async fn read_marker(
    store: &dyn Store,
    video_id: &str,
    name: &str,
    k: u32,
) -> Result<Option<Marker>, StoreError> {
    let bytes = store
        .get(&publish::key(video_id, &marker_key(name, k)))
        .await?;
    Ok(bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Where a unit's marker of rendition `name`, chunk `k`, lives under the video's folder.
pub(super) fn marker_key(name: &str, k: u32) -> String {
    format!("units/{name}-{k}.json")
}
