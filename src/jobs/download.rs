//! The MP4 download of a finished video: the files of one published video rendition and of the
//! audio are read back from the output store (so a resumed job that encoded nothing still makes
//! it), joined, remuxed into a faststart MP4 without re-encoding, and published as
//! `videos/<id>/download.mp4` before the job's final state, which lists it.

use std::path::{Path, PathBuf};

use super::run::Job;
use super::scratch;
use super::status::{Download, RenditionKind, RenditionState, RenditionStatus};
use crate::media::{self, MediaError};

/// The download's name under the video's folder.
pub const DOWNLOAD: &str = "download.mp4";

/// The tallest ready video rendition whose short side is at most `max`, or the lowest ready
/// one when none is that small.
pub fn pick(renditions: &[RenditionStatus], max: u32) -> Option<&RenditionStatus> {
    let short = |r: &RenditionStatus| r.width.zip(r.height).map_or(0, |(w, h)| w.min(h));
    let ready = || {
        renditions
            .iter()
            .filter(|r| r.kind == RenditionKind::Video && r.state == RenditionState::Ready)
    };
    ready()
        .filter(|r| short(r) <= max)
        .max_by_key(|r| short(r))
        .or_else(|| ready().min_by_key(|r| short(r)))
}

/// The files a media playlist names, in the order they are read: the `EXT-X-MAP`
/// initialisation segment (fMP4), then the segments. Names are plain file names beside the
/// playlist; anything else is refused.
pub fn playlist_files(text: &str) -> Result<Vec<String>, MediaError> {
    let mut files = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = match line.strip_prefix("#EXT-X-MAP:") {
            Some(map) => map.split('"').nth(1).unwrap_or_default(),
            None if line.starts_with('#') => continue,
            None => line,
        };
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(MediaError::Io(format!("unexpected segment name `{name}`")));
        }
        files.push(name.to_string());
    }
    Ok(files)
}

impl Job<'_> {
    /// Makes and publishes the download when `DOWNLOAD_RENDITION` asks for one and a video
    /// rendition is ready, and lists it in status.json. A failure is a warning, never the job's:
    /// the HLS package stands without it.
    pub(super) async fn publish_download(&self) {
        let Some(max) = self.settings().download_rendition.0 else {
            return;
        };
        let status = self.tracker.snapshot();
        let Some(video) = pick(&status.renditions, max) else {
            return;
        };
        let audio = status
            .renditions
            .iter()
            .find(|r| r.kind == RenditionKind::Audio && r.state == RenditionState::Ready);
        let started = std::time::Instant::now();
        match self.make_download(video, audio).await {
            Ok(bytes) => {
                tracing::info!(
                    rendition = %video.name,
                    bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "download published"
                );
                let download = Download {
                    path: self.key(DOWNLOAD),
                    rendition: video.name.clone(),
                    bytes,
                };
                self.tracker.update(|s| s.download = Some(download));
            }
            Err(e) => {
                tracing::warn!("the MP4 download could not be made: {e}");
                self.tracker.update(|s| {
                    s.warnings
                        .push(format!("the MP4 download could not be made: {e}"))
                });
            }
        }
    }

    /// Fetches and joins each rendition's files into scratch, remuxes them, publishes the MP4;
    /// returns its size.
    async fn make_download(
        &self,
        video: &RenditionStatus,
        audio: Option<&RenditionStatus>,
    ) -> Result<u64, MediaError> {
        let scratch = scratch::create(&self.settings().scratch_dir, &self.request.video_id)?;
        let mut joined = Vec::new();
        for r in std::iter::once(video).chain(audio) {
            joined.push(self.fetch_rendition(r, scratch.path()).await?);
        }
        let out = scratch.path().join(DOWNLOAD);
        let to = out.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let inputs: Vec<&Path> = joined.iter().map(PathBuf::as_path).collect();
            media::download::remux(&inputs, &to)
        })
        .await
        .map_err(|e| MediaError::Encode(format!("the remux stopped: {e}")))??;
        let bytes = std::fs::metadata(&out)?.len();
        let key = self.key(DOWNLOAD);
        self.store()
            .put_file(&key, &out)
            .await
            .map_err(|e| MediaError::Publish(format!("publishing {key}: {e}")))?;
        self.published.lock().expect("lock").push(key);
        Ok(bytes)
    }

    /// Reads rendition `r`'s published playlist and files from the output store and joins the
    /// files into one local file under `dir`.
    async fn fetch_rendition(
        &self,
        r: &RenditionStatus,
        dir: &Path,
    ) -> Result<PathBuf, MediaError> {
        let publish_err = |e: crate::storage::StoreError| MediaError::Publish(e.to_string());
        let folder = r.playlist.rsplit_once('/').map_or("", |(folder, _)| folder);
        let playlist = self.key(&format!("manifest/{}", r.playlist));
        let text = self
            .store()
            .get(&playlist)
            .await
            .map_err(publish_err)?
            .ok_or_else(|| MediaError::Publish(format!("{playlist} is missing")))?;
        let names = playlist_files(&String::from_utf8_lossy(&text))?;
        let parts = dir.join(&r.name);
        std::fs::create_dir_all(&parts)?;
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let key = self.key(&format!("manifest/{folder}/{name}"));
            let to = parts.join(&name);
            self.store()
                .download(&key, &to, u64::MAX)
                .await
                .map_err(publish_err)?;
            files.push(to);
        }
        let extension = files
            .last()
            .and_then(|f| f.extension())
            .map_or("mp4".into(), |e| e.to_string_lossy().into_owned());
        let joined = dir.join(format!("{}.{extension}", r.name));
        media::download::join(&files, &joined)?;
        std::fs::remove_dir_all(&parts)?;
        Ok(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ladder::Tier;

    fn video(name: &str, w: u32, h: u32, state: RenditionState) -> RenditionStatus {
        RenditionStatus {
            name: name.into(),
            kind: RenditionKind::Video,
            tier: Tier::Critical,
            width: Some(w),
            height: Some(h),
            target_bitrate_kbps: 1,
            state,
            playlist: format!("{name}/index.m3u8"),
            size_bytes: None,
            bitrate_kbps: None,
            peak_bitrate_kbps: None,
            frames_done: 0,
            frames_expected: 0,
            error: None,
            codecs: None,
            started: None,
            finished: None,
        }
    }

    #[test]
    fn the_tallest_ready_rung_at_most_the_limit_is_picked() {
        use RenditionState::{Failed, Ready};
        let ladder = [
            video("360p", 640, 360, Ready),
            video("720p", 1280, 720, Ready),
            video("1080p", 1920, 1080, Ready),
        ];
        assert_eq!(pick(&ladder, 720).unwrap().name, "720p");
        assert_eq!(pick(&ladder, 719).unwrap().name, "360p");
        assert_eq!(
            pick(&ladder, 100).unwrap().name,
            "360p",
            "the lowest if none fits"
        );
        // Portrait: the short side counts.
        let portrait = [video("720p", 720, 1280, Ready)];
        assert_eq!(pick(&portrait, 720).unwrap().name, "720p");
        // A failed rung is passed over (partial).
        let partial = [
            video("360p", 640, 360, Ready),
            video("720p", 1280, 720, Failed),
        ];
        assert_eq!(pick(&partial, 720).unwrap().name, "360p");
        assert!(pick(&[video("720p", 1280, 720, Failed)], 720).is_none());
    }

    #[test]
    fn playlist_files_are_the_init_then_segments_and_nothing_outside() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg_0.m4s\n\
                    #EXTINF:1.0,\nseg_1.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_files(text).unwrap(),
            ["init.mp4", "seg_0.m4s", "seg_1.m4s"]
        );
        assert!(playlist_files("#EXTINF:4,\n../x.ts\n").is_err());
        assert!(playlist_files("#EXTINF:4,\nhttp://h/x.ts\n").is_err());
    }
}
