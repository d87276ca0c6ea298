//! A video's poster and storyboard, made from its published renditions (read back through the
//! output store, never from a second decode of the source) each time renditions turn ready:
//! the poster as soon as the first tier is ready, republished from a wider rendition as one
//! finishes (up to 1920 wide); the storyboard once, from the narrowest rendition. A failure is
//! logged, never the job's: the HLS package stands without pictures.

use std::time::Instant;

use bytes::Bytes;

use super::frames::{Published, ready_videos};
use super::run::Job;
use super::status::{Images, RenditionStatus};
use crate::config::ImageSet;
use crate::media::MediaError;
use crate::media::images::{candidates, detail, pick};
use crate::media::picture::{self, ImageFormat, Sprite};

/// Where the pictures go, under `videos/<id>/`.
pub const POSTER: &str = "images/poster.jpg";
pub const STORYBOARD: &str = "images/storyboard.jpg";
pub const STORYBOARD_VTT: &str = "images/storyboard.vtt";

/// The poster's largest width (the full display size of a rendition up to 1080p landscape).
use super::frames::MAX_WIDTH as MAX_POSTER_WIDTH;
/// Storyboard tiles for any length, unless that leaves more than `MAX_TILE_GAP` between two.
const TILES: u32 = 100;
const MAX_TILE_GAP: f64 = 10.0;
/// At most this many tiles (10 h at one per 10 s): the sprite stays under JPEG's 65,535 rows.
const MAX_TILES: u32 = 3600;
/// A tile fits in a square this many pixels wide (160 × 90 for 16:9), tiles per sprite row.
const TILE_BOX: u32 = 160;
const COLUMNS: u32 = 10;

/// The rendition the poster is decoded from and the poster's size: the widest ready one at
/// most `MAX_POSTER_WIDTH` wide at its own size, else the narrowest scaled down to it.
pub fn poster_source<'a>(
    videos: &[&'a RenditionStatus],
) -> Option<(&'a RenditionStatus, u32, u32)> {
    let size = |r: &RenditionStatus| (r.width.unwrap_or(2), r.height.unwrap_or(2));
    let fits = videos.iter().rev().find(|r| size(r).0 <= MAX_POSTER_WIDTH);
    let r = *fits.or(videos.first())?;
    let (w, h) = size(r);
    let width = w.min(MAX_POSTER_WIDTH);
    Some((r, width, picture::even_height(width, w, h)))
}

/// Evenly spaced tile times over `duration`: `TILES`, more if that leaves over `MAX_TILE_GAP`.
pub fn tile_times(duration: f64) -> Vec<f64> {
    let count = ((duration / MAX_TILE_GAP).ceil() as u32).clamp(TILES, MAX_TILES);
    let gap = duration.max(0.0) / f64::from(count);
    (0..count).map(|i| f64::from(i) * gap).collect()
}

/// A tile's even size for a `w` × `h` rendition: its long side `TILE_BOX` (or the rendition's).
fn tile_size(w: u32, h: u32) -> (u32, u32) {
    let even = |n: f64| ((n / 2.0).round() as u32 * 2).max(2);
    let scale = (f64::from(TILE_BOX) / f64::from(w.max(h))).min(1.0);
    (even(f64::from(w) * scale), even(f64::from(h) * scale))
}

impl Job<'_> {
    /// Makes what is missing now that renditions are ready: a poster (or a wider one than
    /// published) and the storyboard. Called after each pass and before the final state.
    pub(super) async fn publish_images(&self) {
        if self.settings().images == ImageSet::None {
            return;
        }
        let status = self.tracker.snapshot();
        let videos = ready_videos(&status);
        let Some((from, width, height)) = poster_source(&videos) else {
            return;
        };
        let have = status.images.clone().unwrap_or_default();
        if have.poster_width.is_none_or(|w| width > w) {
            let started = Instant::now();
            match self.make_poster(videos[0], from, width, height).await {
                Ok(at) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(rendition = %from.name, width, at, seconds, "poster published");
                }
                Err(e) => tracing::warn!("the poster could not be made: {e}"),
            }
        }
        if have.storyboard.is_none() {
            let started = Instant::now();
            match self.make_storyboard(videos[0]).await {
                Ok(tiles) => {
                    let seconds = started.elapsed().as_secs_f64();
                    let rendition = &videos[0].name;
                    tracing::info!(%rendition, tiles, seconds, "storyboard published");
                }
                Err(e) => tracing::warn!("the storyboard could not be made: {e}"),
            }
        }
    }

    /// Scores the poster candidates on `scorer` (the narrowest rendition: cheap to decode),
    /// then publishes the chosen time from `from` at `width` × `height`; returns that time.
    async fn make_poster(
        &self,
        scorer: &RenditionStatus,
        from: &RenditionStatus,
        width: u32,
        height: u32,
    ) -> Result<f64, MediaError> {
        let store = self.request.output.clone();
        let id = &self.request.video_id;
        let small = Published::open(store.clone(), id, scorer).await?;
        let duration = small.index.duration();
        let times = candidates(self.settings().poster_time.seconds(duration), duration);
        let details = small.frames(&times, |f| Ok(detail(f))).await?;
        let at = times[pick(&details)];
        let source = match scorer.name == from.name {
            true => small,
            false => Published::open(store, id, from).await?,
        };
        let jpeg = ImageFormat::Jpeg;
        let mut made = source
            .frames(&[at], move |f| {
                picture::encode(&picture::scale(f, width, height, jpeg)?, jpeg)
            })
            .await?;
        let bytes = made.pop().expect("one time asked");
        self.put_image(POSTER, bytes).await?;
        self.tracker.update(|s| {
            let images = s.images.get_or_insert_with(Images::default);
            images.poster = Some(POSTER.into());
            (images.poster_width, images.poster_height) = (Some(width), Some(height));
        });
        Ok(at)
    }

    /// Publishes the sprite of evenly spaced tiles from rendition `from`, then its WebVTT
    /// index; returns the number of tiles.
    async fn make_storyboard(&self, from: &RenditionStatus) -> Result<usize, MediaError> {
        let board =
            Published::open(self.request.output.clone(), &self.request.video_id, from).await?;
        let duration = board.index.duration();
        let times = tile_times(duration);
        let (tw, th) = tile_size(board.width, board.height);
        let jpeg = ImageFormat::Jpeg;
        let tiles = board
            .frames(&times, move |f| picture::scale(f, tw, th, jpeg))
            .await?;
        let count = times.len();
        let image = STORYBOARD.rsplit('/').next().expect("a file name");
        let (sprite, vtt) = tokio::task::spawn_blocking(move || {
            let mut sprite = Sprite::new(count as u32, COLUMNS, tw, th);
            for (i, tile) in tiles.iter().enumerate() {
                sprite.place(i as u32, tile);
            }
            let vtt = picture::storyboard_vtt(&sprite, &times, duration, image);
            Ok::<_, MediaError>((picture::encode(sprite.picture(), jpeg)?, vtt))
        })
        .await
        .map_err(|e| MediaError::Encode(format!("the storyboard stopped: {e}")))??;
        self.put_image(STORYBOARD, sprite).await?;
        self.put_image(STORYBOARD_VTT, vtt.into_bytes()).await?;
        self.tracker.update(|s| {
            let images = s.images.get_or_insert_with(Images::default);
            images.storyboard = Some(STORYBOARD_VTT.into());
            images.storyboard_image = Some(STORYBOARD.into());
        });
        Ok(count)
    }

    /// Publishes `videos/<id>/<rest>`, to be withdrawn with the rest if nothing plays.
    async fn put_image(&self, rest: &str, bytes: Vec<u8>) -> Result<(), MediaError> {
        let key = self.key(rest);
        self.store()
            .put(&key, Bytes::from(bytes))
            .await
            .map_err(|e| MediaError::Publish(format!("publishing {key}: {e}")))?;
        let mut published = self.published.lock().expect("lock");
        if !published.contains(&key) {
            published.push(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ladder::Tier;

    fn video(name: &str, width: u32, height: u32) -> RenditionStatus {
        RenditionStatus {
            name: name.into(),
            kind: super::super::status::RenditionKind::Video,
            tier: Tier::Critical,
            width: Some(width),
            height: Some(height),
            target_bitrate_kbps: 1,
            state: super::super::status::RenditionState::Ready,
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
    fn the_poster_comes_from_the_widest_rendition_up_to_1920() {
        let (r240, r1080, r2160) = (
            video("240p", 426, 240),
            video("1080p", 1920, 1080),
            video("2160p", 3840, 2160),
        );
        let pick =
            |v: &[&RenditionStatus]| poster_source(v).map(|(r, w, h)| (r.name.clone(), w, h));
        assert_eq!(pick(&[&r240]), Some(("240p".into(), 426, 240)));
        assert_eq!(
            pick(&[&r240, &r1080, &r2160]),
            Some(("1080p".into(), 1920, 1080))
        );
        assert_eq!(pick(&[&r2160]), Some(("2160p".into(), 1920, 1080)));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn about_a_hundred_tiles_at_most_ten_seconds_apart() {
        let short = tile_times(30.0);
        assert_eq!(short.len(), 100);
        assert!((short[1] - 0.3).abs() < 1e-9);
        let long = tile_times(3600.0);
        assert_eq!(long.len(), 360);
        assert!(long.windows(2).all(|w| w[1] - w[0] <= 10.0));
        assert_eq!(tile_times(1e6).len(), MAX_TILES as usize);
        assert_eq!(tile_size(1920, 1080), (160, 90));
        assert_eq!(tile_size(1080, 1920), (90, 160));
        assert_eq!(tile_size(128, 72), (128, 72));
    }
}
