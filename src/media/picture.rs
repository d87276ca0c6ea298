//! Still pictures out of decoded frames: scaled (swscale, full-range JPEG colours), encoded as
//! JPEG (libavcodec's mjpeg) or PNG, and tiled into a storyboard sprite with its WebVTT index.

use ffmpeg_next::{self as ff, codec, color, format, frame, software};

use super::MediaError;

/// JPEG quality as libavcodec's qscale (2 best … 31 worst); 3 is close to `ffmpeg -q:v 3`.
const JPEG_QSCALE: i32 = 3;
/// libavcodec's `FF_QP2LAMBDA`: qscale to the encoder's lambda units.
const QP2LAMBDA: i32 = 118;

/// An image file format a picture is encoded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }

    /// The pixel layout the encoder takes.
    fn pixel(self) -> format::Pixel {
        match self {
            ImageFormat::Jpeg => format::Pixel::YUV420P,
            ImageFormat::Png => format::Pixel::RGB24,
        }
    }
}

/// `picture` scaled to `width` × `height` in the layout `as_format` encodes, YUV in full range
/// with BT.601 coefficients as JFIF expects (our renditions are limited range).
pub fn scale(
    picture: &frame::Video,
    width: u32,
    height: u32,
    as_format: ImageFormat,
) -> Result<frame::Video, MediaError> {
    let fail = |e: ff::Error| MediaError::Encode(format!("scaling a picture: {e}"));
    let mut scaler = software::scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        as_format.pixel(),
        width,
        height,
        software::scaling::Flags::BICUBIC,
    )
    .map_err(fail)?;
    let source = match picture.color_space() {
        color::Space::BT709 => ff::ffi::SWS_CS_ITU709,
        _ => ff::ffi::SWS_CS_DEFAULT,
    };
    let source_full = i32::from(picture.color_range() == color::Range::JPEG);
    // SAFETY: the context is ours and valid; the coefficient tables are libswscale's statics.
    unsafe {
        ff::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            ff::ffi::sws_getCoefficients(source),
            source_full,
            ff::ffi::sws_getCoefficients(ff::ffi::SWS_CS_DEFAULT),
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
    let mut out = frame::Video::empty();
    scaler.run(picture, &mut out).map_err(fail)?;
    out.set_color_range(color::Range::JPEG);
    Ok(out)
}

/// Encodes a picture made by [`scale`] for `as_format` into the bytes of one image file.
pub fn encode(picture: &frame::Video, as_format: ImageFormat) -> Result<Vec<u8>, MediaError> {
    let fail = |e: ff::Error| MediaError::Encode(format!("encoding a picture: {e}"));
    let name = match as_format {
        ImageFormat::Jpeg => "mjpeg",
        ImageFormat::Png => "png",
    };
    let codec = ff::encoder::find_by_name(name)
        .ok_or_else(|| MediaError::Encode(format!("libavcodec has no {name} encoder")))?;
    let mut encoder = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(fail)?;
    encoder.set_width(picture.width());
    encoder.set_height(picture.height());
    encoder.set_format(as_format.pixel());
    encoder.set_time_base((1, 25));
    if as_format == ImageFormat::Jpeg {
        encoder.set_color_range(color::Range::JPEG);
        encoder.set_flags(codec::Flags::QSCALE);
        encoder.set_global_quality(JPEG_QSCALE * QP2LAMBDA);
    }
    let mut encoder = encoder.open().map_err(fail)?;
    let mut input = picture.clone();
    input.set_pts(Some(0));
    if as_format == ImageFormat::Jpeg {
        // SAFETY: a plain field of a frame we own; mjpeg takes the frame's quality as qscale.
        unsafe { (*input.as_mut_ptr()).quality = JPEG_QSCALE * QP2LAMBDA };
    }
    encoder.send_frame(&input).map_err(fail)?;
    encoder.send_eof().map_err(fail)?;
    let mut bytes = Vec::new();
    let mut packet = ff::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        bytes.extend_from_slice(packet.data().unwrap_or_default());
    }
    match bytes.is_empty() {
        true => Err(MediaError::Encode(format!(
            "the {name} encoder gave nothing"
        ))),
        false => Ok(bytes),
    }
}

/// `height` for a picture `width` wide with the shape of `source_w` × `source_h`, even and at
/// least 2 (4:2:0 chroma).
pub fn even_height(width: u32, source_w: u32, source_h: u32) -> u32 {
    let exact = f64::from(width) * f64::from(source_h) / f64::from(source_w.max(1));
    ((exact / 2.0).round() as u32 * 2).max(2)
}

/// A grid of equal tiles on one full-range YUV 4:2:0 picture, black where no tile is.
pub struct Sprite {
    pub columns: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    picture: frame::Video,
}

impl Sprite {
    /// Room for `tiles` tiles of an even `tile_width` × `tile_height`, `columns` a row.
    pub fn new(tiles: u32, columns: u32, tile_width: u32, tile_height: u32) -> Self {
        let rows = tiles.div_ceil(columns).max(1);
        let columns = columns.min(tiles).max(1);
        let mut picture = frame::Video::new(
            format::Pixel::YUV420P,
            columns * tile_width,
            rows * tile_height,
        );
        for (plane, value) in [(0, 0u8), (1, 128), (2, 128)] {
            picture.data_mut(plane).fill(value);
        }
        picture.set_color_range(color::Range::JPEG);
        Self {
            columns,
            tile_width,
            tile_height,
            picture,
        }
    }

    /// Where tile `i` lies: x, y, width, height in pixels.
    pub fn rect(&self, i: u32) -> (u32, u32, u32, u32) {
        let (column, row) = (i % self.columns, i / self.columns);
        (
            column * self.tile_width,
            row * self.tile_height,
            self.tile_width,
            self.tile_height,
        )
    }

    /// Copies `tile` (made by [`scale`] at the tile size, JPEG layout) into place `i`.
    pub fn place(&mut self, i: u32, tile: &frame::Video) {
        let (x, y, w, h) = self.rect(i);
        for plane in 0..3 {
            let shift = u32::from(plane > 0);
            let (x, y, w, h) = (x >> shift, y >> shift, w >> shift, h >> shift);
            let (from_stride, to_stride) = (tile.stride(plane), self.picture.stride(plane));
            let from = tile.data(plane);
            let to = self.picture.data_mut(plane);
            for row in 0..h as usize {
                let src = &from[row * from_stride..][..w as usize];
                let at = (y as usize + row) * to_stride + x as usize;
                to[at..at + w as usize].copy_from_slice(src);
            }
        }
    }

    pub fn picture(&self) -> &frame::Video {
        &self.picture
    }
}

/// The WebVTT index of a storyboard: one cue per tile from its time to the next tile's (the
/// last to `duration`), pointing at `image#xywh=x,y,w,h`, as hls.js, video.js and Mux read it.
pub fn storyboard_vtt(sprite: &Sprite, times: &[f64], duration: f64, image: &str) -> String {
    let mut vtt = String::from("WEBVTT\n");
    for (i, &start) in times.iter().enumerate() {
        let end = times.get(i + 1).copied().unwrap_or(duration).max(start);
        let (x, y, w, h) = sprite.rect(i as u32);
        vtt.push_str(&format!(
            "\n{} --> {}\n{image}#xywh={x},{y},{w},{h}\n",
            vtt_time(start),
            vtt_time(end)
        ));
    }
    vtt
}

/// `hh:mm:ss.mmm`.
fn vtt_time(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: u32, height: u32, luma: u8) -> frame::Video {
        let mut f = frame::Video::new(format::Pixel::YUV420P, width, height);
        f.data_mut(0).fill(luma);
        f.data_mut(1).fill(128);
        f.data_mut(2).fill(128);
        f
    }

    #[test]
    fn pictures_encode_as_jpeg_and_png_at_the_asked_size() {
        crate::media::init().unwrap();
        let source = gray(320, 180, 200);
        for kind in [ImageFormat::Jpeg, ImageFormat::Png] {
            let scaled = scale(&source, 100, even_height(100, 320, 180), kind).unwrap();
            assert_eq!((scaled.width(), scaled.height()), (100, 56));
            let bytes = encode(&scaled, kind).unwrap();
            let magic: &[u8] = match kind {
                ImageFormat::Jpeg => &[0xff, 0xd8, 0xff],
                ImageFormat::Png => b"\x89PNG",
            };
            assert!(bytes.starts_with(magic), "{kind:?}");
        }
    }

    #[test]
    fn tiles_land_in_their_rects_and_the_vtt_names_them() {
        crate::media::init().unwrap();
        let mut sprite = Sprite::new(5, 2, 16, 10);
        assert_eq!(
            (sprite.picture().width(), sprite.picture().height()),
            (32, 30)
        );
        let tile = scale(&gray(64, 40, 235), 16, 10, ImageFormat::Jpeg).unwrap();
        sprite.place(3, &tile);
        let p = sprite.picture();
        let luma = |x: usize, y: usize| p.data(0)[y * p.stride(0) + x];
        assert_eq!(sprite.rect(3), (16, 10, 16, 10));
        assert!(luma(20, 15) > 200 && luma(5, 5) == 0, "{}", luma(20, 15));
        let vtt = storyboard_vtt(&sprite, &[0.0, 1.5, 3.0, 4.5, 6.0], 7.25, "s.jpg");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\ns.jpg#xywh=0,0,16,10\n"));
        assert!(vtt.ends_with("00:00:06.000 --> 00:00:07.250\ns.jpg#xywh=0,20,16,10\n"));
        assert_eq!(vtt_time(3725.5), "01:02:05.500");
    }
}
