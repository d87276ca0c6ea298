//! Putting finished work in the output store: rendition folders out of scratch, and the master
//! playlist over everything finished so far.

use std::path::Path;

use super::run::JobRequest;
use super::status::write_atomic;
use crate::media::MediaError;
use crate::media::master::{self, AudioVariant, VideoVariant};
use crate::media::playlist::{MediaPlaylist, Rates};

/// Renditions finished so far, as the master playlist lists them.
#[derive(Default)]
pub struct Finished {
    pub videos: Vec<VideoVariant>,
    pub audio: Option<AudioVariant>,
}

/// Moves a finished rendition from scratch into the output store; returns its measured rates.
pub fn rendition(from: &Path, to: &Path) -> Result<Rates, MediaError> {
    let rates = MediaPlaylist::read(from)?.rates();
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::rename(from, to).is_err() {
        // Scratch on another file system: copy; the scratch cleanup removes the originals.
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(rates)
}

/// Writes master.m3u8 once there is something to play (a video rendition, or the audio of an
/// audio-only source); returns its path inside the output store, or `None` if not yet.
pub fn master(
    request: &JobRequest,
    finished: &Finished,
    videos: usize,
) -> std::io::Result<Option<String>> {
    let playable = match videos {
        0 => finished.audio.is_some(),
        _ => !finished.videos.is_empty(),
    };
    if !playable {
        return Ok(None);
    }
    let text = master::render(&finished.videos, finished.audio.as_ref());
    let relative = format!("videos/{}/manifest/master.m3u8", request.video_id);
    write_atomic(&request.output_root.join(&relative), text.as_bytes())?;
    Ok(Some(relative))
}
