//! Putting finished work in the output store: a rendition's files out of scratch, and
//! status.json as it changes (the master playlist is `progressive`'s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::status::JobStatus;
use crate::media::MediaError;
use crate::media::master::{AudioVariant, VideoVariant};
use crate::media::mux::PLAYLIST;
use crate::media::playlist::{MediaPlaylist, Rates};
use crate::storage::{Store, StoreError};

/// Renditions finished so far, as the master playlist lists them.
#[derive(Default)]
pub struct Finished {
    pub videos: Vec<VideoVariant>,
    pub audio: Option<AudioVariant>,
}

/// The master playlist, under a video's folder.
pub const MASTER: &str = "manifest/master.m3u8";

/// `videos/<id>/<rest>`: every key of a video's output.
pub fn key(video_id: &str, rest: &str) -> String {
    format!("videos/{video_id}/{rest}")
}

/// Publishes a finished rendition folder under `prefix` (`videos/<id>/manifest/<name>`): media
/// first, the playlist last, so a reader never sees a playlist naming a missing segment. Files
/// published during the encode are gone from the folder; `moved` has their sizes.
/// Returns the measured rates and the keys written.
pub async fn rendition(
    store: &dyn Store,
    from: &Path,
    prefix: &str,
    moved: &Mutex<HashMap<PathBuf, u64>>,
) -> Result<(Rates, Vec<String>), MediaError> {
    let rates = MediaPlaylist::read_with(from, &moved.lock().expect("lock"))?.rates();
    let mut names: Vec<String> = std::fs::read_dir(from)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| (n == PLAYLIST, n.clone()));
    let mut keys = Vec::with_capacity(names.len());
    for name in names {
        let key = format!("{prefix}/{name}");
        store
            .put_file(&key, &from.join(&name))
            .await
            .map_err(|e| MediaError::Publish(format!("publishing {key}: {e}")))?;
        keys.push(key);
    }
    Ok((rates, keys))
}

/// Reads a video's status.json from the store, if it has one that parses (a store error is
/// logged and taken as none).
pub async fn read_status(store: &dyn Store, video_id: &str) -> Option<JobStatus> {
    fetch_status(store, video_id)
        .await
        .inspect_err(|e| tracing::warn!("reading status.json: {e}"))
        .ok()?
}

/// Reads a video's status.json from the store: none if it has none that parses, an error if
/// the store could not be read (so a caller can tell "no such video" from "cannot tell now").
pub async fn fetch_status(
    store: &dyn Store,
    video_id: &str,
) -> Result<Option<JobStatus>, StoreError> {
    let Some(bytes) = store.get(&key(video_id, "status.json")).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes)
        .inspect_err(|e| tracing::warn!("status.json does not parse: {e}"))
        .ok())
}

/// Cloud Storage takes about one write per second to the same object; faster ones draw 429s.
pub const SAME_OBJECT_GAP: Duration = Duration::from_secs(1);

/// Keeps status.json in the store equal to the latest status: writes on change, at most once
/// per `SAME_OBJECT_GAP` (changes in between are merged; a slow store skips intermediate
/// states, never the last), and once more when `stop` fires.
pub async fn status_writer(
    store: std::sync::Arc<dyn Store>,
    mut updates: watch::Receiver<JobStatus>,
    stop: CancellationToken,
) {
    loop {
        let status = updates.borrow_and_update().clone();
        let written = Instant::now();
        write_status(store.as_ref(), &status).await;
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            changed = updates.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(written + SAME_OBJECT_GAP) => {}
        }
    }
    let last = updates.borrow().clone();
    write_status(store.as_ref(), &last).await;
}

pub async fn write_status(store: &dyn Store, status: &JobStatus) {
    let key = key(&status.video_id, "status.json");
    let json = Bytes::from(serde_json::to_vec_pretty(status).expect("status serialises"));
    // Written on the version read, so a later view of the same run that another writer put
    // in between is seen (and kept) rather than overwritten.
    for _ in 0..4 {
        let version = match store.get_versioned(&key).await {
            Ok(Some((bytes, version))) => {
                let stored = serde_json::from_slice::<JobStatus>(&bytes);
                if stored.is_ok_and(|stored| stored.supersedes(status)) {
                    tracing::debug!("status.json holds a later view of this run: kept");
                    return;
                }
                version
            }
            Ok(None) => 0,
            Err(e) => return tracing::error!("reading status.json before writing it: {e}"),
        };
        match store.put_if(&key, json.clone(), version).await {
            Err(StoreError::Changed(_)) => continue,
            Err(e) => return tracing::error!("writing status.json: {e}"),
            Ok(_) => return,
        }
    }
    tracing::error!("writing status.json: it kept changing under other writers");
}
