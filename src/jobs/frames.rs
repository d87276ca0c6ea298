//! Frames of a published rendition, read back through the output store: its playlist maps
//! times to segments, and each segment needed is fetched (with the init segment in front) and
//! decoded alone in the blocking pool. Never the source: the encode already decoded it once.
//! Also the on-demand thumbnail of `GET /thumbnail`.

use std::sync::Arc;

use bytes::Bytes;
use ffmpeg_next::frame;

use super::publish;
use super::status::{JobStatus, RenditionKind, RenditionState, RenditionStatus};
use crate::media::MediaError;
use crate::media::images::{self, SegmentIndex};
use crate::media::picture::{self, ImageFormat};
use crate::storage::Store;

/// The widest thumbnail or poster.
pub const MAX_WIDTH: u32 = 1920;

/// Ready video renditions of `status`, narrowest first.
pub fn ready_videos(status: &JobStatus) -> Vec<&RenditionStatus> {
    let mut videos: Vec<&RenditionStatus> = status
        .renditions
        .iter()
        .filter(|r| r.kind == RenditionKind::Video && r.state == RenditionState::Ready)
        .filter(|r| r.width.is_some() && r.height.is_some())
        .collect();
    videos.sort_by_key(|r| r.width);
    videos
}

/// One published video rendition, opened for reading frames.
pub struct Published {
    store: Arc<dyn Store>,
    /// `videos/<id>/manifest/<name>/`, where its files are.
    folder: String,
    pub index: SegmentIndex,
    init: Bytes,
    pub width: u32,
    pub height: u32,
}

impl Published {
    /// Reads rendition `r`'s published playlist and init segment.
    pub async fn open(
        store: Arc<dyn Store>,
        video_id: &str,
        r: &RenditionStatus,
    ) -> Result<Self, MediaError> {
        let dir = r.playlist.rsplit_once('/').map_or("", |(dir, _)| dir);
        let folder = publish::key(video_id, &format!("manifest/{dir}/"));
        let playlist = publish::key(video_id, &format!("manifest/{}", r.playlist));
        let text = fetch(store.as_ref(), &playlist).await?;
        let index = SegmentIndex::parse(&String::from_utf8_lossy(&text))?;
        let init = match &index.init {
            Some(name) => fetch(store.as_ref(), &format!("{folder}{name}")).await?,
            None => Bytes::new(),
        };
        Ok(Self {
            store,
            folder,
            index,
            init,
            width: r.width.unwrap_or(2),
            height: r.height.unwrap_or(2),
        })
    }

    /// The frames shown at ascending `times`, each passed through `keep` (scaling, scoring) in
    /// the blocking pool; one segment is fetched and held at a time.
    pub async fn frames<T, F>(&self, times: &[f64], keep: F) -> Result<Vec<T>, MediaError>
    where
        T: Send + 'static,
        F: Fn(&frame::Video) -> Result<T, MediaError> + Send + Sync + 'static,
    {
        let keep = Arc::new(keep);
        let mut out = Vec::with_capacity(times.len());
        for (i, offsets) in self.index.group(times) {
            let name = &self.index.segments[i].name;
            let segment = fetch(self.store.as_ref(), &format!("{}{name}", self.folder)).await?;
            let bytes = [&self.init[..], &segment[..]].concat();
            let keep = keep.clone();
            let span = tracing::Span::current();
            let kept = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let frames = images::frames_at(bytes, &offsets)?;
                frames
                    .iter()
                    .map(|f| keep(f))
                    .collect::<Result<Vec<T>, _>>()
            })
            .await
            .map_err(|e| MediaError::Decode(format!("decoding a segment stopped: {e}")))??;
            out.extend(kept);
        }
        Ok(out)
    }
}

async fn fetch(store: &dyn Store, key: &str) -> Result<Bytes, MediaError> {
    store
        .get(key)
        .await
        .map_err(|e| MediaError::Publish(format!("reading {key}: {e}")))?
        .ok_or_else(|| MediaError::Publish(format!("{key} is missing")))
}

/// Why a thumbnail was not made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// No rendition of the video is published yet.
    #[error("no picture of this video is published yet")]
    NotPublished,
    #[error("time {time} s is past the end of the video ({duration:.3} s)")]
    PastTheEnd { time: f64, duration: f64 },
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// The picture of video `status` at `time` seconds, `width` wide (height keeps the shape),
/// from its narrowest ready rendition at least that wide (else its widest), encoded as
/// `as_format`. Without `width`: the rendition picked for `MAX_WIDTH`, at its own width (at
/// most `MAX_WIDTH`). Returns the bytes, width and height.
pub async fn thumbnail(
    store: Arc<dyn Store>,
    status: &JobStatus,
    time: f64,
    width: Option<u32>,
    as_format: ImageFormat,
) -> Result<(Vec<u8>, u32, u32), ThumbnailError> {
    let videos = ready_videos(status);
    let wanted = width.unwrap_or(MAX_WIDTH);
    let rendition = videos
        .iter()
        .find(|r| r.width.unwrap_or(0) >= wanted)
        .or(videos.last())
        .ok_or(ThumbnailError::NotPublished)?;
    let published = Published::open(store, &status.video_id, rendition).await?;
    let duration = published.index.duration();
    if time > duration + 1e-3 {
        return Err(ThumbnailError::PastTheEnd { time, duration });
    }
    let w = width.unwrap_or(published.width.min(MAX_WIDTH));
    let h = picture::even_height(w, published.width, published.height);
    let mut pictures = published
        .frames(&[time], move |f| {
            picture::encode(&picture::scale(f, w, h, as_format)?, as_format)
        })
        .await?;
    let bytes = pictures
        .pop()
        .ok_or_else(|| MediaError::Decode("no picture at that time".into()))?;
    Ok((bytes, w, h))
}
