//! The bit-rate ladder and the rule that picks renditions for a source.
//!
//! Default rungs (H.264, 16:9, kb/s) sit between Apple's HLS Authoring Specification table
//! (e.g. 1080p 6000, 720p 3000, 540p 2000, 360p 730) and the ladders the big platforms publish
//! (YouTube's upload recommendations, Netflix's fixed ladder): 2160p 16000, 1440p 9000,
//! 1080p 5000, 720p 2800, 480p 1400, 360p 800, 240p 400, 144p 200. Other aspect ratios scale the
//! rate by their pixel count relative to 16:9 (within 0.5×–1.5×).

use serde::{Deserialize, Serialize};

/// One step of the ladder: a nominal height (the short side) and its H.264 bit rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub kbps: u32,
}

/// Rungs sorted tallest first, heights unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladder(Vec<Rung>);

impl Ladder {
    pub const DEFAULT_SPEC: &str =
        "2160:16000,1440:9000,1080:5000,720:2800,480:1400,360:800,240:400,144:200";

    pub fn new(mut rungs: Vec<Rung>) -> Result<Self, String> {
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        rungs.dedup_by_key(|r| r.height);
        if rungs.is_empty() {
            return Err("the ladder needs at least one rung".into());
        }
        Ok(Self(rungs))
    }

    pub fn rungs(&self) -> &[Rung] {
        &self.0
    }
}

impl Default for Ladder {
    fn default() -> Self {
        let rungs = [2160, 1440, 1080, 720, 480, 360, 240, 144]
            .into_iter()
            .zip([16000, 9000, 5000, 2800, 1400, 800, 400, 200])
            .map(|(height, kbps)| Rung { height, kbps })
            .collect();
        Self(rungs)
    }
}

/// Encode priority: low resolutions first so playback can start early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// ≤480p: the first playable set.
    Critical,
    /// 481–1080p.
    Standard,
    /// >1080p.
    Premium,
}

impl Tier {
    /// The tier's name as status.json and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }

    pub fn of_height(short_side: u32) -> Self {
        match short_side {
            0..=480 => Tier::Critical,
            481..=1080 => Tier::Standard,
            _ => Tier::Premium,
        }
    }
}

/// A video rendition to produce: output size (display orientation), rate and tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoRendition {
    /// Folder and display name, `<short side>p`.
    pub name: String,
    pub tier: Tier,
    pub width: u32,
    pub height: u32,
    pub kbps: u32,
}

/// Picks the renditions for a source of `width`×`height` display pixels (rotation and sample
/// aspect ratio already applied): every rung no taller than the short side (or just above it,
/// see `NEAR_RUNG`), never upscaling,
/// display aspect kept, dimensions even. A source below the lowest rung gets one rendition at its
/// own (even) size. Sorted tallest first.
pub fn select(ladder: &Ladder, width: u32, height: u32) -> Vec<VideoRendition> {
    let (short, long) = (width.min(height).max(2), width.max(height).max(2));
    let portrait = height > width;
    let mut picked: Vec<Rung> = ladder
        .rungs()
        .iter()
        .copied()
        .filter(|r| f64::from(r.height) * NEAR_RUNG <= f64::from(short))
        .collect();
    if picked.is_empty() {
        let lowest = *ladder.rungs().last().expect("a ladder has rungs");
        picked.push(Rung {
            height: short & !1,
            kbps: lowest.kbps,
        });
    }
    picked
        .into_iter()
        .map(|rung| {
            // A rung a little above the source is made at the source's own (even) height.
            let s = even(f64::from(rung.height)).min((short & !1).max(2));
            let l = even(f64::from(s) * f64::from(long) / f64::from(short)).min(long & !1);
            let (w, h) = if portrait { (s, l) } else { (l, s) };
            VideoRendition {
                name: format!("{}p", even(f64::from(rung.height))),
                tier: Tier::of_height(rung.height),
                width: w,
                height: h,
                kbps: scaled_kbps(rung, s, l),
            }
        })
        .collect()
}

/// A source up to 5 % short of a rung still gets it, at its own height: a 1920×1078 export is
/// 1080p (made 1078 tall), not 720p.
const NEAR_RUNG: f64 = 0.95;

/// Nearest even number, at least 2 (H.264 4:2:0 needs even sizes).
fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// The rung's rate adjusted for pixel count relative to a 16:9 frame of the same short side.
fn scaled_kbps(rung: Rung, short: u32, long: u32) -> u32 {
    let reference = f64::from(short) * f64::from(short) * 16.0 / 9.0;
    let ratio = (f64::from(short) * f64::from(long) / reference).clamp(0.5, 1.5);
    // Rounding to even sizes moves the ratio a little; only real aspect changes count.
    let ratio = if (ratio - 1.0).abs() < 0.05 {
        1.0
    } else {
        ratio
    };
    (f64::from(rung.kbps) * ratio).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &[VideoRendition]) -> Vec<&str> {
        r.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn landscape_1080p_gets_every_rung_up_to_1080() {
        let r = select(&Ladder::default(), 1920, 1080);
        assert_eq!(names(&r), ["1080p", "720p", "480p", "360p", "240p", "144p"]);
        assert_eq!((r[0].width, r[0].height, r[0].kbps), (1920, 1080, 5000));
        assert_eq!((r[2].width, r[2].height), (854, 480));
        assert_eq!((r[5].width, r[5].height), (256, 144));
        assert_eq!(r[0].tier, Tier::Standard);
        assert_eq!(r[2].tier, Tier::Critical);
    }

    #[test]
    fn never_upscales_and_4k_is_premium() {
        let r = select(&Ladder::default(), 3840, 2160);
        assert_eq!(r[0].name, "2160p");
        assert_eq!(r[0].tier, Tier::Premium);
        assert_eq!(r.len(), 8);
        let r = select(&Ladder::default(), 1921, 1081);
        assert_eq!((r[0].width, r[0].height), (1920, 1080));
        let r = select(&Ladder::default(), 1280, 680);
        assert_eq!(names(&r), ["480p", "360p", "240p", "144p"]);
    }

    #[test]
    fn a_source_just_short_of_a_rung_gets_it_at_its_own_height() {
        let r = select(&Ladder::default(), 1919, 1079);
        assert_eq!(names(&r)[..2], ["1080p", "720p"]);
        assert_eq!((r[0].width, r[0].height), (1918, 1078));
        assert_eq!(r[0].tier, Tier::Standard);
        let r = select(&Ladder::default(), 1280, 719);
        assert_eq!(
            (r[0].name.as_str(), r[0].width, r[0].height),
            ("720p", 1278, 718)
        );
        let r = select(&Ladder::default(), 478, 852);
        assert_eq!(
            (r[0].name.as_str(), r[0].width, r[0].height),
            ("480p", 478, 852)
        );
        assert_eq!(r[0].tier, Tier::Critical);
    }

    #[test]
    fn portrait_sources_get_portrait_renditions() {
        let r = select(&Ladder::default(), 1080, 1920);
        assert_eq!((r[0].width, r[0].height), (1080, 1920));
        assert_eq!((r[1].width, r[1].height), (720, 1280));
        assert!(r.iter().all(|r| r.width < r.height));
    }

    #[test]
    fn odd_sizes_round_to_even_and_keep_aspect() {
        for r in select(&Ladder::default(), 853, 479) {
            assert_eq!(r.width % 2, 0);
            assert_eq!(r.height % 2, 0);
            let aspect = f64::from(r.width) / f64::from(r.height);
            assert!((aspect - 853.0 / 479.0).abs() < 0.03, "{r:?}");
        }
    }

    #[test]
    fn tiny_source_gets_one_rendition_at_its_own_even_size() {
        let r = select(&Ladder::default(), 127, 71);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].width, r[0].height, r[0].name.as_str()),
            (126, 70, "70p")
        );
        assert_eq!(r[0].tier, Tier::Critical);
    }

    #[test]
    fn square_video_spends_fewer_bits_than_widescreen() {
        let r = select(&Ladder::default(), 1080, 1080);
        assert_eq!((r[0].width, r[0].height), (1080, 1080));
        assert!(r[0].kbps < 5000 && r[0].kbps >= 2500);
    }
}
