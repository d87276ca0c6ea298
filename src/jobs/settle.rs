//! Finishing a queued video from what is in the output store, never from what one instance
//! remembers: the plan and the unit markers give each complete rendition's playlist, the master
//! over them and status.json. Any instance may settle a video after any unit, as often as it
//! likes: the same markers give the same files, and status.json is written on the version read,
//! its renditions only ever moving forward.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::Utc;

use super::assembly::{append_part, final_playlist};
use super::cost::{self, Prices};
use super::markers::{Marker, marker_key, read_marker};
use super::outcome::variant;
use super::plan::Plan;
use super::progressive::{Board, Growing, Turn};
use super::publish::{self, MASTER};
use super::status::{JobState, JobStatus, RenditionKind, RenditionState};
use crate::config::TranscodeSettings;
use crate::media::mux::INIT_SEGMENT;
use crate::media::playlist::{MediaPlaylist, Rates};
use crate::storage::{Store, StoreError};

/// What the store says of one rendition.
enum Found {
    Ready {
        codecs: Option<String>,
        rates: Rates,
    },
    Failed(String),
    /// Not all parts are in: frames of the parts that are, and whether any unit began.
    Pending {
        frames: u64,
        begun: bool,
    },
}

/// The key of the record a unit leaves for rendition `name`'s part `k` when it failed for good.
pub(super) fn failure_key(name: &str, k: u32) -> String {
    format!("units/{name}-{k}.failed")
}

/// Settles video `video_id` of `plan`, whose renditions are made in `parts` each (same order as
/// `plan.statuses`): publishes what is complete and writes status.json. `begun`: renditions a
/// unit has just started on. Returns the status written.
pub async fn settle(
    store: &dyn Store,
    video_id: &str,
    plan: &Plan,
    parts: &[u32],
    begun: &[usize],
    settings: &TranscodeSettings,
) -> Result<JobStatus, StoreError> {
    let keys: HashSet<String> = store
        .list(&publish::key(video_id, "units/"))
        .await?
        .into_iter()
        .collect();
    let mut found = Vec::new();
    let mut cpu_seconds = 0.0;
    for (i, status) in plan.statuses.iter().enumerate() {
        let rendition = match examine(store, video_id, plan, i, parts[i], &keys).await? {
            Err(why) => Found::Failed(why),
            Ok(Parts::Pending {
                frames,
                begun: b,
                cpu,
            }) => {
                cpu_seconds += cpu;
                Found::Pending {
                    frames,
                    begun: b || begun.contains(&i),
                }
            }
            Ok(Parts::Complete(markers)) => {
                cpu_seconds += markers.iter().map(|m| m.cpu_seconds).sum::<f64>();
                match joined(&markers) {
                    Ok((text, rates)) => {
                        let key = publish::key(video_id, &format!("manifest/{}", status.playlist));
                        put_if_different(store, &key, text).await?;
                        let codecs = markers[0].codecs.clone();
                        Found::Ready { codecs, rates }
                    }
                    Err(why) => Found::Failed(why),
                }
            }
        };
        found.push(rendition);
    }
    let finished = found.iter().all(|f| !matches!(f, Found::Pending { .. }));
    let master = write_master(store, video_id, plan, &found, finished).await?;
    let prices = Prices::from_settings(settings);
    update_status(store, video_id, |s| {
        apply(s, plan, &found, master.as_deref());
        s.cost = None;
        if s.timestamps.started.is_some() {
            cost::record_pass(s, cpu_seconds, 0, prices);
        }
    })
    .await
}

/// A rendition's parts in the store.
enum Parts {
    Complete(Vec<Marker>),
    Pending { frames: u64, begun: bool, cpu: f64 },
}

/// Rendition `i`'s parts as its markers give them (made under this plan's settings), or the
/// reason a unit recorded when one failed for good.
async fn examine(
    store: &dyn Store,
    video_id: &str,
    plan: &Plan,
    i: usize,
    parts: u32,
    keys: &HashSet<String>,
) -> Result<Result<Parts, String>, StoreError> {
    let status = &plan.statuses[i];
    let (mut frames, mut cpu) = (0, 0.0);
    let mut markers = Vec::new();
    for k in 0..parts {
        let failed = publish::key(video_id, &failure_key(&status.name, k));
        if keys.contains(&failed) {
            let why = store.get(&failed).await?.unwrap_or_default();
            return Ok(Err(String::from_utf8_lossy(&why).into_owned()));
        }
        if !keys.contains(&publish::key(video_id, &marker_key(&status.name, k))) {
            continue;
        }
        let marker = read_marker(store, video_id, &status.name, k)
            .await?
            .filter(|m| m.encoding == plan.encoding);
        let Some(marker) = marker else {
            continue;
        };
        cpu += marker.cpu_seconds;
        let end = marker.end_frame.unwrap_or(u64::MAX);
        frames += end
            .min(status.frames_expected)
            .saturating_sub(marker.first_frame);
        markers.push(marker);
    }
    Ok(Ok(match markers.len() as u32 == parts {
        true => Parts::Complete(markers),
        false => Parts::Pending {
            begun: !markers.is_empty(),
            frames,
            cpu,
        },
    }))
}

/// The rendition's final playlist joined from its parts' markers, with its rates measured from
/// the sizes they recorded; or why the parts do not join: one encoded with another codec
/// configuration than part 0 cannot share its init segment.
fn joined(markers: &[Marker]) -> Result<(String, Rates), String> {
    let folder = Path::new("/");
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    sizes.insert(folder.join(INIT_SEGMENT), markers[0].init_bytes);
    let mut text = String::new();
    for (k, marker) in markers.iter().enumerate() {
        if marker.avcc != markers[0].avcc {
            return Err(format!(
                "chunk {k} was encoded with another codec configuration (SPS/PPS) than chunk \
                 0: its segments cannot share one init segment"
            ));
        }
        for s in &marker.segments {
            sizes.insert(folder.join(&s.uri), s.bytes);
        }
        append_part(&mut text, k as u32, &marker.playlist);
    }
    let text = final_playlist(&text);
    let rates = MediaPlaylist::parse(&text, folder, &sizes)
        .map_err(|e| format!("the joined playlist does not parse: {e}"))?
        .rates();
    Ok((text, rates))
}

/// Writes the master over the ready renditions (once audio is in, unless the video is
/// `finished`), if that changes it; its key when one is out.
async fn write_master(
    store: &dyn Store,
    video_id: &str,
    plan: &Plan,
    found: &[Found],
    finished: bool,
) -> Result<Option<String>, StoreError> {
    let audio_expected = plan.videos.iter().any(Option::is_none);
    let mut board = Board::new(video_id, None, plan.video_count(), audio_expected);
    for (i, f) in found.iter().enumerate() {
        if let Found::Ready { codecs, rates } = f {
            match variant(plan, i, codecs.as_deref(), *rates) {
                Growing::Video(v) => board.finished.videos.push(v),
                Growing::Audio(a) => board.finished.audio = Some(a),
            }
        }
    }
    let turn = if finished { Turn::Settled } else { Turn::Early };
    let Some(text) = board.text(turn) else {
        return Ok(None);
    };
    let key = publish::key(video_id, MASTER);
    // Written on the version read: of two instances settling at once, the one that saw fewer
    // renditions must not overwrite the other's master with its older view.
    loop {
        let (current, version) = match store.get_versioned(&key).await? {
            Some((bytes, version)) => (String::from_utf8_lossy(&bytes).into_owned(), version),
            None => (String::new(), 0),
        };
        if current == text || names_more(&current, &text) {
            return Ok(Some(key));
        }
        match store.put_if(&key, Bytes::from(text.clone()), version).await {
            Ok(_) => return Ok(Some(key)),
            Err(StoreError::Changed(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether master playlist `current` names every playlist `ours` does, and more.
fn names_more(current: &str, ours: &str) -> bool {
    let uris = |text: &str| -> HashSet<String> {
        text.lines()
            .filter_map(|l| match l.split_once("URI=\"") {
                Some((_, rest)) => rest.split('"').next().map(str::to_string),
                None => (!l.starts_with('#') && !l.is_empty()).then(|| l.to_string()),
            })
            .collect()
    };
    let (current, ours) = (uris(current), uris(ours));
    current.len() > ours.len() && ours.is_subset(&current)
}

async fn put_if_different(store: &dyn Store, key: &str, text: String) -> Result<(), StoreError> {
    if store.get(key).await?.as_deref() == Some(text.as_bytes()) {
        return Ok(());
    }
    store.put(key, Bytes::from(text)).await
}

/// Moves status `s` forward to what `found` says (a rendition never moves back).
fn apply(s: &mut JobStatus, plan: &Plan, found: &[Found], master: Option<&str>) {
    let now = Utc::now();
    if s.renditions.len() != plan.statuses.len() {
        s.renditions = plan.statuses.clone();
    }
    for (r, f) in s.renditions.iter_mut().zip(found) {
        match f {
            Found::Ready { codecs, rates } if r.state != RenditionState::Ready => {
                r.state = RenditionState::Ready;
                r.error = None;
                r.finished = Some(now);
                r.started.get_or_insert(now);
                r.size_bytes = Some(rates.bytes);
                r.bitrate_kbps = Some(rates.average.div_ceil(1000));
                r.peak_bitrate_kbps = Some(rates.peak.div_ceil(1000));
                r.codecs = codecs.clone();
                r.frames_done = r.frames_expected;
            }
            Found::Failed(why) if r.state != RenditionState::Failed => {
                r.state = RenditionState::Failed;
                r.error = Some(why.clone());
                r.finished = Some(now);
            }
            Found::Pending { frames, begun } => {
                r.frames_done = r.frames_done.max(*frames);
                if *begun && r.state == RenditionState::Pending {
                    r.state = RenditionState::Encoding;
                    r.started = Some(now);
                }
            }
            _ => {}
        }
    }
    let begun = s
        .renditions
        .iter()
        .any(|r| r.state != RenditionState::Pending);
    if begun && s.state == JobState::Queued {
        s.state = JobState::Processing;
        s.timestamps.started.get_or_insert(now);
    }
    if let Some(master) = master {
        s.playable = true;
        s.master_playlist = Some(master.to_string());
        s.timestamps.first_playable.get_or_insert(now);
    }
    let done = s
        .renditions
        .iter()
        .all(|r| matches!(r.state, RenditionState::Ready | RenditionState::Failed));
    if done && !s.state.is_final() {
        let main = match plan.video_count() {
            0 => RenditionKind::Audio,
            _ => RenditionKind::Video,
        };
        let ready = |kind| {
            s.renditions
                .iter()
                .filter(|r| r.kind == kind && r.state == RenditionState::Ready)
                .count()
        };
        let failed: Vec<String> = s
            .renditions
            .iter()
            .filter(|r| r.state == RenditionState::Failed)
            .map(|r| format!("{}: {}", r.name, r.error.as_deref().unwrap_or("failed")))
            .collect();
        (s.state, s.error) = match (failed.is_empty(), ready(main) > 0) {
            (true, _) => (JobState::Ready, None),
            (false, true) => (JobState::Partial, Some(failed.join("; "))),
            (false, false) => (JobState::Failed, Some(failed.join("; "))),
        };
        s.timestamps.finished = Some(now);
    }
    s.refresh_progress(now);
    s.timestamps.updated = Some(now);
}

/// Applies `change` to video `video_id`'s status.json on the version read, again if another
/// writer got in between; returns what was written.
pub async fn update_status(
    store: &dyn Store,
    video_id: &str,
    change: impl Fn(&mut JobStatus),
) -> Result<JobStatus, StoreError> {
    let key = publish::key(video_id, "status.json");
    loop {
        let (mut status, version) = match store.get_versioned(&key).await? {
            Some((bytes, version)) => match serde_json::from_slice::<JobStatus>(&bytes) {
                Ok(status) => (status, version),
                Err(_) => (JobStatus::queued(video_id), version),
            },
            None => (JobStatus::queued(video_id), 0),
        };
        change(&mut status);
        let json = Bytes::from(serde_json::to_vec_pretty(&status).expect("serialisable"));
        match store.put_if(&key, json, version).await {
            Ok(_) => return Ok(status),
            Err(StoreError::Changed(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_master_naming_more_playlists_is_not_replaced_by_one_naming_fewer() {
        let audio = "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",URI=\"audio/index.m3u8\"\n";
        let one = format!("#EXTM3U\n{audio}#EXT-X-STREAM-INF:BANDWIDTH=1\n144p/index.m3u8\n");
        let two = format!("{one}#EXT-X-STREAM-INF:BANDWIDTH=2\n720p/index.m3u8\n");
        assert!(super::names_more(&two, &one));
        assert!(!super::names_more(&one, &two));
        assert!(
            !super::names_more(&one, &one),
            "the same set: written again if it differs"
        );
        assert!(!super::names_more("", &one));
    }
}
