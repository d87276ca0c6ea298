//! Publishing segments while their pass still encodes: the muxers hand over each finished file
//! through a bounded queue (an encoder waits when it is full, so a slow bucket slows encoding
//! instead of filling scratch, which is memory on Cloud Run), a few uploads run at once, and each
//! uploaded file leaves scratch. After each upload, the rendition's playlist is published cut
//! to the segments already out (an EVENT playlist a player can follow); its final VOD version
//! is published with the rendition, after this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::progressive::{Board, Growing, Turn};
use super::publish::{self, SAME_OBJECT_GAP};
use crate::media;
use crate::media::mux::{PLAYLIST, SegmentSink};
use crate::media::playlist::{MediaPlaylist, with_target_duration};
use crate::storage::Store;

/// The job's master playlist, shared by the pass's publisher and the job.
pub type SharedBoard = Arc<tokio::sync::Mutex<Board>>;

/// How often a playlist or master held back by `SAME_OBJECT_GAP` is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(250);

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
    /// RFC 6381 codecs of each video folder, read from its init (or first TS) segment.
    codecs: HashMap<PathBuf, String>,
    /// Something was held back by `SAME_OBJECT_GAP` and is to be tried again.
    held: bool,
}

/// What the publisher needs besides the files: where they go, and how each rendition folder
/// enters the master (`renditions`: folder → the rendition with no rates yet).
pub struct Target {
    pub store: Arc<dyn Store>,
    pub video_id: String,
    pub scratch: PathBuf,
    pub board: SharedBoard,
    /// Whether the growing playlists (and the master over them) are published; off, only the
    /// files are.
    pub playlists: bool,
    pub renditions: HashMap<PathBuf, Growing>,
}

/// Starts publishing the files handed to the returned sink: `<scratch>/<name>/<file>` becomes
/// `videos/<id>/manifest/<name>/<file>`. The task ends once `pass_over` fires and what was
/// already queued is uploaded. A file whose upload fails stays in scratch, for the rendition's
/// own publish to try again (and fail the rendition if it cannot).
pub fn start(target: Target, pass_over: CancellationToken) -> (SegmentSink, JoinHandle<Early>) {
    let (sender, mut queue) = mpsc::channel::<PathBuf>(QUEUE);
    // Called on the encoder threads, never in async context, so blocking is right.
    let sink: SegmentSink = Arc::new(move |path: &Path| {
        let _ = sender.blocking_send(path.to_path_buf());
    });
    let task = async move {
        let (store, video_id, scratch) = (&target.store, &target.video_id, &target.scratch);
        let mut early = Early::default();
        let mut uploads = JoinSet::new();
        let mut closing = false;
        loop {
            tokio::select! {
                next = queue.recv(), if uploads.len() < UPLOADS => match next {
                    Some(path) => {
                        let Some(key) = key_for(video_id, scratch, &path) else { continue };
                        uploads.spawn(upload(store.clone(), key, path).in_current_span());
                    }
                    None => break,
                },
                Some(done) = uploads.join_next() => early.settle(done, &target).await,
                () = tokio::time::sleep(RETRY), if early.held => early.retry(&target).await,
                // A pass left running by the watchdog may still hold the sink: stop taking files.
                () = pass_over.cancelled(), if !closing => {
                    closing = true;
                    queue.close();
                }
            }
        }
        while let Some(done) = uploads.join_next().await {
            early.settle(done, &target).await;
        }
        early
    };
    (sink, tokio::spawn(task.in_current_span()))
}

impl Early {
    /// Records a finished upload and republishes its rendition's playlist over it.
    async fn settle(
        &mut self,
        done: Result<Option<Uploaded>, tokio::task::JoinError>,
        target: &Target,
    ) {
        let Ok(Some(Uploaded {
            key,
            path,
            size,
            codecs,
        })) = done
        else {
            return;
        };
        self.keys.push(key);
        let folder = path.parent().map(Path::to_path_buf);
        self.sizes.insert(path, size);
        if let Some(folder) = folder {
            if let Some(codecs) = codecs {
                self.codecs.entry(folder.clone()).or_insert(codecs);
            }
            self.publish_playlist(target, &folder).await;
        }
    }

    /// Publishes one finished file and what follows from it, as the task does (for tests).
    #[cfg(test)]
    pub(super) async fn hand_over(&mut self, target: &Target, path: &Path) {
        let key = key_for(&target.video_id, &target.scratch, path).expect("in scratch");
        let done = upload(target.store.clone(), key, path.to_path_buf()).await;
        self.settle(Ok(done), target).await;
    }

    /// Tries again what `SAME_OBJECT_GAP` held back: the master, then every playlist.
    pub(super) async fn retry(&mut self, target: &Target) {
        self.held = false;
        let written = target
            .board
            .lock()
            .await
            .write(target.store.as_ref(), Turn::Early)
            .await;
        self.held |= matches!(written, Ok(false));
        let folders: Vec<PathBuf> = target.renditions.keys().cloned().collect();
        for folder in folders {
            self.publish_playlist(target, &folder).await;
        }
    }

    /// Publishes `folder`'s playlist as far as its segments are published, if that lists more
    /// segments than last time and the last time is `SAME_OBJECT_GAP` ago (a later segment or
    /// the retry publishes what this skips). A rendition the master names gets a master that
    /// declares the new peak first; one it does not name yet enters it right after. Failing is
    /// only logged: the final playlist comes anyway.
    async fn publish_playlist(&mut self, target: &Target, folder: &Path) {
        if !target.playlists {
            return;
        }
        let Some((text, count)) = published_part(folder, &self.sizes) else {
            return;
        };
        let last = self.listed.get(folder);
        if last.is_some_and(|&(listed, _)| count <= listed) {
            return;
        }
        if last.is_some_and(|&(_, at)| at.elapsed() < SAME_OBJECT_GAP) {
            self.held = true;
            return;
        }
        let Some(key) = key_for(&target.video_id, &target.scratch, &folder.join(PLAYLIST)) else {
            return;
        };
        let store = target.store.as_ref();
        let mut board = target.board.lock().await;
        let growing = self.growing(target, folder, &text);
        if let Some(g) = &growing {
            board.grow(g.clone(), false);
            if !board.covers(g.uri(), g.peak()) {
                match board.write(store, Turn::Early).await {
                    Ok(true) => {}
                    Ok(false) => return self.held = true,
                    Err(e) => return tracing::warn!("publishing the master early failed: {e}"),
                }
            }
        }
        let first = last.is_none();
        let at = Instant::now();
        if let Err(e) = store.put(&key, Bytes::from(text)).await {
            return tracing::warn!("publishing {key} early failed: {e}");
        }
        self.listed.insert(folder.to_path_buf(), (count, at));
        if first {
            self.keys.push(key);
        }
        if let Some(g) = growing {
            board.grow(g, true);
            match board.write(store, Turn::Early).await {
                Ok(written) => self.held |= !written,
                Err(e) => tracing::warn!("publishing the master early failed: {e}"),
            }
        }
    }

    /// `folder`'s rendition as the published part `text` of its playlist measures it; `None`
    /// for a folder the master does not take (unknown, or a video whose codecs are unknown).
    fn growing(&self, target: &Target, folder: &Path, text: &str) -> Option<Growing> {
        let rates = MediaPlaylist::parse(text, folder, &self.sizes)
            .ok()?
            .rates();
        Some(match target.renditions.get(folder)? {
            Growing::Video(v) => {
                let mut v = v.clone();
                v.codecs = self.codecs.get(folder)?.clone();
                v.rates = rates;
                Growing::Video(v)
            }
            Growing::Audio(a) => {
                let mut a = a.clone();
                a.rates = rates;
                Growing::Audio(a)
            }
        })
    }
}

/// `folder`'s playlist as the muxer last wrote it, cut before the first segment not yet
/// published (`published` holds the published files), with the number of segments it lists;
/// `None` if it lists none or its init segment is not out. It stays an EVENT playlist without
/// an end even if the muxer has just finished the file, with a target duration that covers the
/// segments it lists (the muxer's may not). The muxer may be rewriting the file: a
/// torn read loses only its last line, which then names nothing published.
fn published_part(folder: &Path, published: &HashMap<PathBuf, u64>) -> Option<(String, usize)> {
    let text = match super::assembly::assembled(folder, u32::MAX) {
        Some((text, _)) => text, // made in parts
        None => std::fs::read_to_string(folder.join(PLAYLIST)).ok()?,
    };
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

/// A file published early.
struct Uploaded {
    key: String,
    path: PathBuf,
    size: u64,
    /// The video's RFC 6381 codecs, if this file carries its SPS (init, or first TS segment).
    codecs: Option<String>,
}

async fn upload(store: Arc<dyn Store>, key: String, path: PathBuf) -> Option<Uploaded> {
    let size = tokio::fs::metadata(&path).await.ok()?.len();
    let codecs = media::codecs_in(&path);
    match store.put_file(&key, &path).await {
        Ok(()) => Some(Uploaded {
            key,
            path,
            size,
            codecs,
        }),
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
        let target = Target {
            store,
            video_id: "v".into(),
            scratch: scratch.path().to_path_buf(),
            board: Arc::new(tokio::sync::Mutex::new(Board::new("v", None, 1, false))),
            playlists: true,
            renditions: HashMap::new(),
        };
        let (sink, task) = start(target, over.clone());
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
