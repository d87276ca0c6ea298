//! The pixel shape (sample aspect ratio) a source means when its container and its codec each
//! state one: ASF's aspect metadata, MP4's `pasp` box or Matroska's display size against the
//! H.264 SPS or MPEG-4 VOL.

use ffmpeg_next::{Rational, format};

/// The sample aspect ratio of `stream`, whose codec states `codec`: FFmpeg's
/// `av_guess_sample_aspect_ratio` rule, the container's when valid, else the codec's, else
/// square. Writers set the container's value on purpose (a 2.35:1 film in 360x240 WMV); an SPS
/// left over from an earlier step (a phone's 27:64 slow-motion encode in a square-pixel MP4)
/// is what goes stale. FFmpeg's CLI and players decide the same way.
pub fn of_stream(stream: &format::stream::Stream, codec: Rational) -> Rational {
    // SAFETY: reading a plain field of the open stream.
    let container = Rational::from(unsafe { (*stream.as_ptr()).sample_aspect_ratio });
    choose(container, codec)
}

fn choose(container: Rational, codec: Rational) -> Rational {
    let (container, codec) = (valid(container), valid(codec));
    if let (Some(c), Some(k)) = (container, codec) {
        let apart = f64::from(c) / f64::from(k);
        if !(0.5..=2.0).contains(&apart) {
            tracing::info!(
                "the container's sample aspect ratio {}:{} overrides the codec's {}:{}",
                c.numerator(),
                c.denominator(),
                k.numerator(),
                k.denominator()
            );
        }
    }
    container.or(codec).unwrap_or(Rational::new(1, 1))
}

/// `r` reduced, if it is a ratio of two positive numbers (0:1 means "unknown" in libav).
fn valid(r: Rational) -> Option<Rational> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| r.reduce())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_first_then_codec_then_square() {
        let r = Rational::new;
        assert_eq!(choose(r(1280, 819), r(0, 1)), r(1280, 819), "ASF over WMV2");
        assert_eq!(choose(r(1, 1), r(27, 64)), r(1, 1), "pasp over a stale SPS");
        assert_eq!(choose(r(0, 1), r(32, 27)), r(32, 27), "no container value");
        assert_eq!(choose(r(0, 0), r(-1, 1)), r(1, 1), "neither valid");
        assert_eq!(choose(r(20, 10), r(1, 1)), r(2, 1), "reduced");
    }
}
