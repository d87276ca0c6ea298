//! Opening a source safely: the `file` protocol only and an allow-list of demuxers, so a
//! crafted upload (an HLS playlist, a concat list…) cannot make libav read other files or URLs.

use std::path::Path;

use ffmpeg_next::{self as ff, Dictionary, format};

use super::MediaError;

/// Demuxers a source may use. Demuxers that pull in other files or URLs (hls, dash, concat,
/// image2 patterns, tee, …) are absent on purpose, so a crafted upload cannot read the machine.
const ALLOWED_DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,asf,\
    ogg,wav,w64,aiff,caf,mp3,aac,ac3,eac3,flac,amr,h264,hevc,m4v,mpegvideo,mxf,dv,gif,ivf,nut";

/// Opens `path` with the `file` protocol only and the demuxer allow-list.
pub fn open(path: &Path) -> Result<format::context::Input, MediaError> {
    let absolute = std::path::absolute(path)?;
    let mut options = Dictionary::new();
    options.set("protocol_whitelist", "file");
    options.set("format_whitelist", ALLOWED_DEMUXERS);
    // The mov demuxer's own ways out, off by default, held off here in case that changes: a
    // track whose data reference (`dref`) names another file, opened relative to the source or
    // by absolute path.
    options.set("enable_drefs", "0");
    options.set("use_absolute_path", "0");
    // The `file:` prefix stops a name like `http:x` or `concat:a|b` from choosing a protocol.
    let url = format!("file:{}", absolute.display());
    format::input_with_dictionary(&url, options).map_err(|e| match e {
        // libav answers EINVAL for a demuxer outside the allow-list.
        ff::Error::Other { errno } if errno == ff::ffi::EINVAL => {
            MediaError::RefusedFormat(guess_format(&absolute).unwrap_or_else(|| "unknown".into()))
        }
        ff::Error::InvalidData
            if guess_format(&absolute).is_some_and(|f| f.starts_with("mov,")) =>
        {
            MediaError::Truncated(
                "the MP4/MOV index (moov) is missing or damaged; was the upload cut short?".into(),
            )
        }
        other => MediaError::Unreadable(other.to_string()),
    })
}

/// Names the demuxer libav would pick from the first bytes, without letting it open anything.
fn guess_format(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut head)
        .ok()?;
    let size = head.len() as i32;
    head.resize(head.len() + ff::ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let name = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
    let probe = ff::ffi::AVProbeData {
        filename: name.as_ptr(),
        buf: head.as_mut_ptr(),
        buf_size: size,
        mime_type: std::ptr::null(),
    };
    // SAFETY: the probe reads only the padded buffer we own; the result is a static descriptor.
    unsafe {
        let format = ff::ffi::av_probe_input_format(&probe, 1);
        (!format.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*format).name)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// The container's start time in microseconds (`AV_TIME_BASE`), 0 when it has none: the zero
/// every stream's timestamps are measured from.
pub fn start_micros(input: &format::context::Input) -> i64 {
    // SAFETY: reading a plain field of the open format context.
    match unsafe { (*input.as_ptr()).start_time } {
        ff::ffi::AV_NOPTS_VALUE => 0,
        t => t,
    }
}
