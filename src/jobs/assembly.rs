//! Assembling a rendition made in parts: its growing playlist over the finished prefix, and
//! its final playlist once every part is in, with one init segment for all.

use std::path::Path;

use super::run::Job;
use crate::media::MediaError;
use crate::media::mux::{INIT_SEGMENT, PLAYLIST, Part};
use crate::media::playlist::with_target_duration;

impl Job<'_> {
    /// Joins a rendition's `parts` into its final `index.m3u8` and checks that every part was
    /// encoded with part 0's codec configuration (players decode every segment with the one
    /// init segment); the parts' own playlists and init segments leave the folder.
    pub(super) async fn assemble(&self, folder: &Path, parts: u32) -> Result<(), MediaError> {
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
        std::fs::write(folder.join(PLAYLIST), final_playlist(&text))?;
        for k in 0..parts {
            let _ = std::fs::remove_file(folder.join(Part::playlist(k)));
        }
        Ok(())
    }

    /// Part 0's init segment, from scratch or, once published, from the output store.
    pub(super) async fn published_init(&self, folder: &Path) -> Option<Vec<u8>> {
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
pub(super) fn avcc(init: &[u8]) -> Option<&[u8]> {
    let at = init.windows(4).position(|w| w == b"avcC")?;
    let size = u32::from_be_bytes(init.get(at - 4..at)?.try_into().ok()?) as usize;
    init.get(at..at - 4 + size)
}

/// The VOD playlist of a rendition whose parts are all joined in `text`.
pub(super) fn final_playlist(text: &str) -> String {
    let text = text
        .replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD")
        .replace("#EXT-X-ENDLIST\n", "")
        + "#EXT-X-ENDLIST\n";
    with_target_duration(&text)
}

/// Adds part `k`'s playlist `part` to the joined `text`: part 0's header and segments, a later
/// part's segments only.
pub(super) fn append_part(text: &mut String, k: u32, part: &str) {
    if k == 0 {
        for line in part.lines().filter(|l| *l != "#EXT-X-ENDLIST") {
            text.push_str(line);
            text.push('\n');
        }
    } else {
        text.push_str(&only_segments(part));
    }
}

/// A part playlist's segment lines (EXTINF and URI) only.
pub(super) fn only_segments(text: &str) -> String {
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
        append_part(&mut text, k, &part);
        if !part.contains("#EXT-X-ENDLIST") {
            return Some((text, false));
        }
    }
    Some((text, true))
}
