//! The MP4 download: one video rendition and the audio, remuxed (packets copied, nothing
//! re-encoded) from their HLS segments into one faststart MP4, whose index (`moov`) comes before
//! the media (`mdat`) so a plain `<video src>` starts playing before the whole file is in.

use std::fs::File;
use std::path::{Path, PathBuf};

use ffmpeg_next::{self as ff, Dictionary, Packet, Rational, format, media};

use super::{MediaError, input};

/// Joins a rendition's files (the fMP4 init segment first, then the media segments in playlist
/// order) into `to`: concatenated fMP4 fragments are one fragmented MP4, and concatenated
/// MPEG-TS segments are one transport stream, so the joined file is read as a plain local file.
pub fn join(parts: &[PathBuf], to: &Path) -> Result<(), MediaError> {
    let mut out = File::create(to)?;
    for part in parts {
        std::io::copy(&mut File::open(part)?, &mut out)?;
    }
    out.sync_all()?;
    Ok(())
}

/// One input of the remux: its context, the stream copied and the output stream it goes to.
struct Track {
    input: format::context::Input,
    stream: usize,
    time_base: Rational,
    /// The next packet of the copied stream, `None` once the input is exhausted.
    next: Option<Packet>,
}

impl Track {
    /// Reads the next packet of the copied stream; a read error other than the end stops the
    /// remux (the packet iterator would skip it, and may retry it forever).
    fn advance(&mut self) -> Result<(), MediaError> {
        loop {
            let mut packet = Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() == self.stream => {
                    self.next = Some(packet);
                    return Ok(());
                }
                Ok(()) => {}
                Err(ff::Error::Eof) => {
                    self.next = None;
                    return Ok(());
                }
                Err(e) => return Err(MediaError::Decode(format!("reading the segments: {e}"))),
            }
        }
    }

    /// Decode time of the pending packet in seconds, for interleaving the tracks.
    fn next_seconds(&self) -> Option<f64> {
        let p = self.next.as_ref()?;
        let t = p.dts().or(p.pts()).unwrap_or(0);
        Some(t as f64 * f64::from(self.time_base))
    }
}

/// Writes `out` as a faststart MP4 holding the first video or audio stream of each of
/// `inputs` (local files, opened like sources: the `file` protocol and the demuxer allow-list
/// only), packets interleaved by decode time and copied as they are.
pub fn remux(inputs: &[&Path], out: &Path) -> Result<(), MediaError> {
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: ff::Error| MediaError::Encode(format!("{what}: {e}"))
    };
    let mut octx = format::output_as(out, "mp4").map_err(fail("creating the MP4"))?;
    let mut tracks = Vec::with_capacity(inputs.len());
    for path in inputs {
        let input = input::open(path)?;
        let stream = input
            .streams()
            .find(|s| {
                matches!(
                    s.parameters().medium(),
                    media::Type::Video | media::Type::Audio
                )
            })
            .ok_or(MediaError::NoMedia)?;
        let mut ost = octx
            .add_stream(ff::encoder::find(ff::codec::Id::None))
            .map_err(fail("adding a stream"))?;
        ost.set_parameters(stream.parameters());
        // The input's codec tag (from TS, or `hvc1` vs `hev1`) is not the MP4 muxer's to keep.
        unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
        let (index, time_base) = (stream.index(), stream.time_base());
        tracks.push(Track {
            input,
            stream: index,
            time_base,
            next: None,
        });
    }
    let mut options = Dictionary::new();
    options.set("movflags", "+faststart");
    let refused = octx
        .write_header_with(options)
        .map_err(fail("writing the MP4 header"))?
        .iter()
        .next()
        .is_some();
    if refused {
        return Err(MediaError::Encode("the MP4 muxer refused movflags".into()));
    }
    let out_bases: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();
    for track in &mut tracks {
        track.advance()?;
    }
    // The segments keep the HLS muxer's start offset; the MP4 starts at the first video frame
    // (the first track's first packet), the audio priming before it left to an edit list.
    let start = tracks.first().and_then(|t| {
        let p = t.next.as_ref()?;
        Some(p.pts().or(p.dts())? as f64 * f64::from(t.time_base))
    });
    let start = start.unwrap_or(0.0);
    while let Some(i) = earliest(&tracks) {
        let mut packet = tracks[i].next.take().expect("has a packet");
        let shift = (start / f64::from(tracks[i].time_base)).round() as i64;
        packet.set_pts(packet.pts().map(|t| t - shift));
        packet.set_dts(packet.dts().map(|t| t - shift));
        packet.rescale_ts(tracks[i].time_base, out_bases[i]);
        packet.set_stream(i);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut octx)
            .map_err(fail("writing a packet"))?;
        tracks[i].advance()?;
    }
    // With faststart, the trailer moves the index in front of the media.
    octx.write_trailer().map_err(fail("finishing the MP4"))?;
    Ok(())
}

/// The track whose pending packet comes first, `None` once every input is exhausted.
fn earliest(tracks: &[Track]) -> Option<usize> {
    (0..tracks.len())
        .filter_map(|i| tracks[i].next_seconds().map(|t| (i, t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remuxed_mp4_has_its_index_first_and_every_stream() {
        crate::media::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (video, audio) = (dir.path().join("v.ts"), dir.path().join("a.mp4"));
        crate::media::test_clip(&video, 2, &[]);
        let sine = [
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-map",
            "1:a",
            "-c:a",
            "aac",
        ];
        crate::media::test_clip(&audio, 2, &sine);
        let out = dir.path().join("out.mp4");
        remux(&[&video, &audio], &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let find = |name: &[u8]| bytes.windows(4).position(|w| w == name).unwrap();
        assert!(find(b"moov") < find(b"mdat"), "moov after mdat");
        let reread = input::open(&out).unwrap();
        let kinds: Vec<_> = reread.streams().map(|s| s.parameters().medium()).collect();
        assert_eq!(kinds, [media::Type::Video, media::Type::Audio]);
    }
}
