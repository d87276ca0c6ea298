//! Publishing segments while their pass still encodes: the muxers hand over each finished file
//! through a bounded queue (an encoder waits when it is full, so a slow bucket slows encoding
//! instead of filling scratch, which is memory on Cloud Run), a few uploads run at once, and each
//! uploaded file leaves scratch. After each upload, the rendition's playlist is published cut
//! to the segments already out (an EVENT playlist a player can follow); its final VOD version
//! is published with the rendition, after this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::publish::{self, SAME_OBJECT_GAP};
use crate::media::mux::{PLAYLIST, SegmentSink};
use crate::media::playlist::with_target_duration;
use crate::storage::Store;

/// Finished files waiting for upload, at most.
const QUEUE: usize = 8;
/// Uploads at once.
const UPLOADS: usize = 4;

/// What was published while the pass ran.
#[derive(Default)]
pub struct Early {
    pub keys: Vec<String>,
    /// Sizes of the published files, which are gone from scratch (the rates need them).
    pub sizes: HashMap<PathBuf, u64>,
    /// Segments each folder's published playlist lists, and when it was published.
    listed: HashMap<PathBuf, (usize, Instant)>,
}

/// Starts publishing the files handed to the returned sink: `<scratch>/<name>/<file>` becomes
/// `videos/<id>/manifest/<name>/<file>`. The task ends once `pass_over` fires and what was
/// already queued is uploaded. A file whose upload fails stays in scratch, for the rendition's
/// own publish to try again (and fail the rendition if it cannot).
pub fn start(
    store: Arc<dyn Store>,
    video_id: &str,
    scratch: &Path,
    pass_over: CancellationToken,
) -> (SegmentSink, JoinHandle<Early>) {
    let (sender, mut queue) = mpsc::channel::<PathBuf>(QUEUE);
    // Called on the encoder threads, never in async context, so blocking is right.
    let sink: SegmentSink = Arc::new(move |path: &Path| {
        let _ = sender.blocking_send(path.to_path_buf());
    });
    let (video_id, scratch) = (video_id.to_string(), scratch.to_path_buf());
    let task = async move {
        let mut early = Early::default();
        let mut uploads = JoinSet::new();
        let mut closing = false;
        loop {
            tokio::select! {
                next = queue.recv(), if uploads.len() < UPLOADS => match next {
                    Some(path) => {
                        let Some(key) = key_for(&video_id, &scratch, &path) else { continue };
                        uploads.spawn(upload(store.clone(), key, path).in_current_span());
                    }
                    None => break,
                },
                Some(done) = uploads.join_next() => {
                    early.settle(done, store.as_ref(), &video_id, &scratch).await;
                }
                // A pass left running by the watchdog may still hold the sink: stop taking files.
                () = pass_over.cancelled(), if !closing => {
                    closing = true;
                    queue.close();
                }
            }
        }
        while let Some(done) = uploads.join_next().await {
            early
                .settle(done, store.as_ref(), &video_id, &scratch)
                .await;
        }
        early
    };
    (sink, tokio::spawn(task.in_current_span()))
}

impl Early {
    /// Records a finished upload and republishes its rendition's playlist over it.
    async fn settle(
        &mut self,
        done: Result<Option<(String, PathBuf, u64)>, tokio::task::JoinError>,
        store: &dyn Store,
        video_id: &str,
        scratch: &Path,
    ) {
        let Ok(Some((key, path, size))) = done else {
            return;
        };
        self.keys.push(key);
        let folder = path.parent().map(Path::to_path_buf);
        self.sizes.insert(path, size);
        if let Some(folder) = folder {
            self.publish_playlist(store, video_id, scratch, &folder)
                .await;
        }
    }

    /// Publishes `folder`'s playlist as far as its segments are published, if that lists more
    /// segments than last time and the last time is `SAME_OBJECT_GAP` ago (a later segment
    /// publishes what this skips). Failing is only logged: the final playlist comes anyway.
    async fn publish_playlist(
        &mut self,
        store: &dyn Store,
        video_id: &str,
        scratch: &Path,
        folder: &Path,
    ) {
        let Some((text, count)) = published_part(folder, &self.sizes) else {
            return;
        };
        let last = self.listed.get(folder);
        if last.is_some_and(|&(listed, at)| count <= listed || at.elapsed() < SAME_OBJECT_GAP) {
            return;
        }
        let Some(key) = key_for(video_id, scratch, &folder.join(PLAYLIST)) else {
            return;
        };
        let first = last.is_none();
        let at = Instant::now();
        match store.put(&key, Bytes::from(text)).await {
            Ok(()) => {
                self.listed.insert(folder.to_path_buf(), (count, at));
                if first {
                    self.keys.push(key);
                }
            }
            Err(e) => tracing::warn!("publishing {key} early failed: {e}"),
        }
    }
}

/// `folder`'s playlist as the muxer last wrote it, cut before the first segment not yet
/// published (`published` holds the published files), with the number of segments it lists;
/// `None` if it lists none or its init segment is not out. It stays an EVENT playlist without
/// an end even if the muxer has just finished the file, with a target duration that covers the
/// segments it lists (the muxer's may not). The muxer may be rewriting the file: a
/// torn read loses only its last line, which then names nothing published.
fn published_part(folder: &Path, published: &HashMap<PathBuf, u64>) -> Option<(String, usize)> {
    let text = std::fs::read_to_string(folder.join(PLAYLIST)).ok()?;
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let is_out = |name: &str| published.contains_key(&folder.join(name));
    let (mut part, mut pending, mut count) = (String::new(), String::new(), 0);
    for line in text.lines() {
        if let Some(map) = line.strip_prefix("#EXT-X-MAP:")
            && !map.split('"').nth(1).is_some_and(is_out)
        {
            return None;
        }
        if line.starts_with("#EXT-X-PLAYLIST-TYPE:") {
            pending.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
            continue;
        }
        if line.starts_with('#') {
            if line != "#EXT-X-ENDLIST" {
                pending.push_str(line);
                pending.push('\n');
            }
            continue;
        }
        if !is_out(line) {
            break;
        }
        part.push_str(&pending);
        part.push_str(line);
        part.push('\n');
        pending.clear();
        count += 1;
    }
    (count > 0).then(|| (with_target_duration(&part), count))
}

/// The output key of a file in a rendition folder of `scratch`.
fn key_for(video_id: &str, scratch: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(scratch).ok()?.to_str()?;
    Some(publish::key(video_id, &format!("manifest/{rest}")))
}

async fn upload(
    store: Arc<dyn Store>,
    key: String,
    path: PathBuf,
) -> Option<(String, PathBuf, u64)> {
    let size = tokio::fs::metadata(&path).await.ok()?.len();
    match store.put_file(&key, &path).await {
        Ok(()) => Some((key, path, size)),
        Err(e) => {
            tracing::warn!("publishing {key} early failed; its rendition will retry: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handed_over_files_are_published_and_leave_scratch() {
        let scratch = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(out.path()).unwrap());
        let folder = scratch.path().join("360p");
        std::fs::create_dir_all(&folder).unwrap();
        let over = CancellationToken::new();
        let (sink, task) = start(store, "v", scratch.path(), over.clone());
        let files: Vec<PathBuf> = (0..20)
            .map(|n| folder.join(format!("seg_{n:05}.m4s")))
            .collect();
        for (n, file) in files.iter().enumerate() {
            std::fs::write(file, vec![7u8; n + 1]).unwrap();
        }
        // As an encoder thread would, including waiting when the queue is full.
        let handed = files.clone();
        std::thread::spawn(move || handed.iter().for_each(|f| sink(f)))
            .join()
            .unwrap();
        over.cancel();
        let early = task.await.unwrap();

        assert_eq!(early.keys.len(), 20);
        for (n, file) in files.iter().enumerate() {
            assert!(!file.exists(), "{file:?} left scratch");
            assert_eq!(early.sizes[file], n as u64 + 1);
            let published = out
                .path()
                .join(format!("videos/v/manifest/360p/seg_{n:05}.m4s"));
            assert_eq!(std::fs::read(published).unwrap().len(), n + 1);
        }
    }

    #[test]
    fn a_playlist_is_cut_to_its_published_segments() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path();
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
                    #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n\
                    #EXTINF:2.000000,\nseg_00000.m4s\n#EXTINF:2.000000,\nseg_00001.m4s\n\
                    #EXTINF:1.500000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n";
        std::fs::write(folder.join(PLAYLIST), text).unwrap();
        let mut out: HashMap<PathBuf, u64> = ["seg_00000.m4s", "seg_00001.m4s"]
            .iter()
            .map(|name| (folder.join(name), 1))
            .collect();
        // No init segment out yet: nothing a player could start on.
        assert_eq!(published_part(folder, &out), None);

        out.insert(folder.join("init.mp4"), 1);
        let (part, count) = published_part(folder, &out).unwrap();
        assert_eq!(count, 2);
        assert!(part.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{part}");
        assert!(
            part.ends_with("#EXTINF:2.000000,\nseg_00001.m4s\n"),
            "{part}"
        );
        assert!(
            !part.contains("seg_00002") && !part.contains("ENDLIST"),
            "{part}"
        );

        // The target duration follows the segments listed, not the muxer's rounding
        // (TARGETDURATION:2 over a 2.5 s segment breaks RFC 8216 §4.3.3.1).
        let half = text
            .replace("TARGETDURATION:2", "TARGETDURATION:0")
            .replacen("2.000000", "2.500000", 1);
        std::fs::write(folder.join(PLAYLIST), &half).unwrap();
        let (part, _) = published_part(folder, &out).unwrap();
        assert!(part.contains("#EXT-X-TARGETDURATION:3\n"), "{part}");
        std::fs::write(folder.join(PLAYLIST), text).unwrap();

        // A torn read: the last line is cut short and names nothing published.
        let torn = &text[..text.find("seg_00001.m4s").unwrap() + 8];
        std::fs::write(folder.join(PLAYLIST), torn).unwrap();
        assert_eq!(published_part(folder, &out).unwrap().1, 1);
        std::fs::write(folder.join(PLAYLIST), "#EXTM").unwrap();
        assert_eq!(published_part(folder, &out), None);
    }
}
