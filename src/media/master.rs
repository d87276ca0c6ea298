//! The HLS master playlist: one entry per finished rendition, with measured rates.

use std::fmt::Write;

use super::playlist::Rates;

/// Audio group id shared by every video variant.
const AUDIO_GROUP: &str = "audio";
/// RFC 6381 codec string of AAC-LC.
pub const AAC_LC: &str = "mp4a.40.2";

/// A finished video rendition as the master lists it.
#[derive(Clone, Debug)]
pub struct VideoVariant {
    pub uri: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub codecs: String,
    pub rates: Rates,
}

/// The finished audio rendition.
#[derive(Clone, Debug)]
pub struct AudioVariant {
    pub uri: String,
    pub rates: Rates,
}

/// Renders the master playlist. BANDWIDTH is the video's peak plus the audio's peak, so it is
/// never below the peak of what a player fetches (RFC 8216 §4.3.4.2); variants go by bandwidth.
/// A rendition that a larger one undercuts (see [`dominated`]) is left out. With no video, the
/// audio rendition becomes the only variant (an audio-only package).
/// While a listed playlist still `grows` (EVENT), `EXT-X-START:TIME-OFFSET=0` makes players
/// start it at its beginning instead of near its live edge (hls.js 1.7 does). A master over
/// finished (VOD) playlists leaves it out: FFmpeg's HLS demuxer (ffprobe, mpv) takes the tag in
/// a master for a media playlist of its own, with no segments, and then knows no duration.
pub fn render(video: &[VideoVariant], audio: Option<&AudioVariant>, grows: bool) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if grows {
        out.push_str("#EXT-X-START:TIME-OFFSET=0\n");
    }
    let audio_rates = audio.map(|a| a.rates).unwrap_or_default();
    if video.is_empty() {
        if let Some(a) = audio {
            let _ = write!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{AAC_LC}\"\n{}\n",
                a.rates.peak, a.rates.average, a.uri
            );
        }
        return out;
    }
    if let Some(a) = audio {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"Main\",DEFAULT=YES,\
             AUTOSELECT=YES,CHANNELS=\"2\",URI=\"{}\"",
            a.uri
        );
    }
    let mut sorted: Vec<&VideoVariant> = video.iter().filter(|v| !dominated(v, video)).collect();
    sorted.sort_by_key(|v| v.rates.peak);
    for v in sorted {
        let (codecs, group) = match audio {
            Some(_) => (
                format!("{},{AAC_LC}", v.codecs),
                format!(",AUDIO=\"{AUDIO_GROUP}\""),
            ),
            None => (v.codecs.clone(), String::new()),
        };
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},\
             CODECS=\"{codecs}\",FRAME-RATE={:.3}{group}\n{}\n",
            v.rates.peak + audio_rates.peak,
            v.rates.average + audio_rates.average,
            v.width,
            v.height,
            v.frame_rate,
            v.uri
        );
    }
    out
}

/// Whether a rendition with more pixels has a peak no higher than `v`'s: `v` then costs at least
/// as much and shows less. Players pick the highest BANDWIDTH their throughput allows, so with
/// `v` listed, a link fast enough for `v` but not for anything above it would get `v` although
/// the larger rendition fits too. Leaving `v` out (rather than raising the larger one's
/// BANDWIDTH to `v`'s, which would give two variants one BANDWIDTH and ask a link for more than
/// the larger one needs) keeps BANDWIDTH rising with resolution. Capped CRF makes this rare
/// (bits grow with pixels at one quality); easy content under ABR is where it happened.
fn dominated(v: &VideoVariant, all: &[VideoVariant]) -> bool {
    let pixels = |v: &VideoVariant| u64::from(v.width) * u64::from(v.height);
    all.iter()
        .any(|u| pixels(u) > pixels(v) && u.rates.peak <= v.rates.peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(uri: &str, peak: u64) -> VideoVariant {
        VideoVariant {
            uri: uri.into(),
            width: 1280,
            height: 720,
            frame_rate: 29.97,
            codecs: "avc1.64001F".into(),
            rates: Rates {
                peak,
                average: peak / 2,
                bytes: 1,
            },
        }
    }

    #[test]
    fn variants_sorted_with_audio_added_to_bandwidth() {
        let audio = AudioVariant {
            uri: "audio/index.m3u8".into(),
            rates: Rates {
                peak: 130_000,
                average: 128_000,
                bytes: 1,
            },
        };
        let text = render(
            &[
                variant("720p/index.m3u8", 3_000_000),
                variant("360p/index.m3u8", 900_000),
            ],
            Some(&audio),
            true,
        );
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-START:TIME-OFFSET=0\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"Main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1030000,AVERAGE-BANDWIDTH=578000,RESOLUTION=1280x720,CODECS=\"avc1.64001F,mp4a.40.2\",FRAME-RATE=29.970,AUDIO=\"audio\"\n360p/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=3130000,AVERAGE-BANDWIDTH=1628000,RESOLUTION=1280x720,CODECS=\"avc1.64001F,mp4a.40.2\",FRAME-RATE=29.970,AUDIO=\"audio\"\n720p/index.m3u8\n"
        );
    }

    #[test]
    fn a_rendition_a_larger_one_undercuts_is_left_out() {
        let sized = |uri: &str, (width, height): (u32, u32), peak: u64| VideoVariant {
            width,
            height,
            ..variant(uri, peak)
        };
        // Easy content: the 1080p came out cheaper than the 720p, which then shows less for more.
        let text = render(
            &[
                sized("1080p/index.m3u8", (1920, 1080), 772_000),
                sized("720p/index.m3u8", (1280, 720), 1_346_000),
                sized("480p/index.m3u8", (854, 480), 500_000),
            ],
            None,
            false,
        );
        let uris: Vec<&str> = text.lines().filter(|l| l.ends_with(".m3u8")).collect();
        assert_eq!(uris, ["480p/index.m3u8", "1080p/index.m3u8"], "{text}");
    }

    #[test]
    fn no_audio_means_no_group_and_audio_only_is_one_variant() {
        let text = render(&[variant("720p/index.m3u8", 1000)], None, false);
        assert!(
            !text.contains("EXT-X-MEDIA") && !text.contains("mp4a") && !text.contains("AUDIO=")
        );
        assert!(!text.contains("EXT-X-START"), "finished: no start tag");
        let growing = render(&[variant("720p/index.m3u8", 1000)], None, true);
        assert_eq!(
            growing.replace("#EXT-X-START:TIME-OFFSET=0\n", ""),
            text,
            "growing: the start tag and nothing else"
        );
        let audio = AudioVariant {
            uri: "audio/index.m3u8".into(),
            rates: Rates {
                peak: 140_000,
                average: 129_000,
                bytes: 1,
            },
        };
        let text = render(&[], Some(&audio), false);
        assert!(text.ends_with("#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=129000,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n"));
    }
}
