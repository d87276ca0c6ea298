//! Opening a source safely: the `file` protocol only and an allow-list of demuxers, so a
//! crafted upload (an HLS playlist, a concat list…) cannot make libav read other files or URLs.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ffmpeg_next::{self as ff, Dictionary, format};

use super::MediaError;
use crate::storage::StoreObject;

/// Demuxers a source may use. Demuxers that pull in other files or URLs (hls, dash, concat,
/// image2 patterns, tee, …) are absent on purpose, so a crafted upload cannot read the machine.
const ALLOWED_DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,asf,\
    ogg,wav,w64,aiff,caf,mp3,aac,ac3,eac3,flac,amr,h264,hevc,m4v,mpegvideo,mxf,dv,gif,ivf,nut";

/// What a watchdog sees of a file being read, and how it stops the reading: libav calls the
/// interrupt callback before each read (and between packets while probing), which counts
/// `reads` and, once `stop` is set, makes the read fail.
#[derive(Clone, Debug, Default)]
pub struct ReadWatch {
    pub reads: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
}

/// Where a source's bytes are: a local file read in place, or a store object read by ranges
/// (never copied whole into scratch, which is memory on Cloud Run).
#[derive(Clone, Debug)]
pub enum Origin {
    File(PathBuf),
    Object(Arc<StoreObject>),
}

/// The read-ahead window of one open source object: what libav holds of it in memory, beside
/// its own small IO buffer.
pub const READ_AHEAD: usize = 4 << 20;
/// libav's IO buffer for a source object (its own default).
const IO_BUFFER: usize = 32 * 1024;
/// The window for walking MP4 box headers: small, as each header is a seek away.
const BOX_WINDOW: usize = 64 * 1024;

impl Origin {
    /// The source's size in bytes.
    pub fn size(&self) -> std::io::Result<u64> {
        match self {
            Origin::File(path) => Ok(std::fs::metadata(path)?.len()),
            Origin::Object(object) => Ok(object.size()),
        }
    }

    /// The store's failure to give the source's bytes, if a read failed: what to report
    /// instead of what libav made of the missing bytes.
    pub fn failure(&self) -> Option<MediaError> {
        match self {
            Origin::File(_) => None,
            Origin::Object(object) => object.failure().map(MediaError::SourceRead),
        }
    }

    /// A name for libav's format guess (its extension counts) and for messages.
    fn name(&self) -> String {
        match self {
            Origin::File(path) => path.to_string_lossy().into_owned(),
            Origin::Object(object) => object.key().rsplit('/').next().unwrap_or("").to_string(),
        }
    }

    /// The first `n` bytes (fewer if it is shorter); nothing from what is not a regular file
    /// (reading a pipe would take its bytes).
    fn head(&self, n: usize) -> Vec<u8> {
        let mut head = Vec::with_capacity(n);
        let _ = match self {
            Origin::File(path) if std::fs::metadata(path).is_ok_and(|m| m.is_file()) => {
                std::fs::File::open(path).and_then(|f| f.take(n as u64).read_to_end(&mut head))
            }
            Origin::File(_) => Ok(0),
            Origin::Object(object) => object.reader(n).take(n as u64).read_to_end(&mut head),
        };
        head
    }
}

/// Opens `path` with the `file` protocol only and the demuxer allow-list.
pub fn open(path: &Path) -> Result<format::context::Input, MediaError> {
    open_watched(path, &ReadWatch::default())
}

/// [`open`], with its reads counted and stoppable through `watch`.
pub fn open_watched(path: &Path, watch: &ReadWatch) -> Result<format::context::Input, MediaError> {
    open_origin(&Origin::File(std::path::absolute(path)?), watch)
}

/// Opens a source with the demuxer allow-list: a file with the `file` protocol only, an object
/// through custom IO by ranged reads with no protocol at all for anything it names.
pub fn open_origin(
    origin: &Origin,
    watch: &ReadWatch,
) -> Result<format::context::Input, MediaError> {
    let mut options = Dictionary::new();
    options.set("format_whitelist", ALLOWED_DEMUXERS);
    // The mov demuxer's own ways out, off by default, held off here in case that changes: a
    // track whose data reference (`dref`) names another file, opened relative to the source or
    // by absolute path.
    options.set("enable_drefs", "0");
    options.set("use_absolute_path", "0");
    let ReadWatch { reads, stop } = watch.clone();
    let interrupt = move || {
        reads.fetch_add(1, Ordering::Relaxed);
        stop.load(Ordering::Relaxed)
    };
    let opened = match origin {
        Origin::File(path) => {
            options.set("protocol_whitelist", "file");
            // The `file:` prefix stops a name like `http:x` or `concat:a|b` from choosing a
            // protocol.
            let url = format!("file:{}", path.display());
            format::input_with_interrupt_and_dictionary(&url, interrupt, options)
        }
        Origin::Object(object) => {
            // Nothing a demuxer names inside the source may be opened: no protocol matches.
            options.set("protocol_whitelist", "none");
            let reader = object.reader(READ_AHEAD);
            let io = format::context::StreamIo::from_read_seek_with_capacity(reader, IO_BUFFER)
                .map_err(|e| MediaError::Unreadable(e.to_string()))?;
            let name = origin.name();
            format::input_from_stream_with_interrupt(io, Some(&name), Some(options), interrupt)
        }
    };
    opened.map_err(|e| match e {
        _ if origin.failure().is_some() => origin.failure().expect("checked"),
        // libav answers EINVAL for a demuxer outside the allow-list.
        ff::Error::Other { errno } if errno == ff::ffi::EINVAL => {
            MediaError::RefusedFormat(guess_format(origin).unwrap_or_else(|| "unknown".into()))
        }
        // Only a file that starts like an MP4 is called cut short: libav guesses `mov` from a
        // `.mp4` name alone, for any bytes.
        ff::Error::InvalidData | ff::Error::Eof if starts_like_mp4(origin) => {
            MediaError::Truncated(
                "the MP4/MOV index (moov) is missing or damaged: the upload was cut short, or \
                 the recording was never finished"
                    .into(),
            )
        }
        ff::Error::InvalidData => MediaError::Unreadable(
            "no video or audio format recognised in its bytes, whatever its name says".into(),
        ),
        other => MediaError::Unreadable(other.to_string()),
    })
}

/// True when the source is a regular file or an object that begins with an ISO-BMFF
/// (MP4/MOV) box that files begin with.
fn starts_like_mp4(origin: &Origin) -> bool {
    let head = origin.head(8);
    const FIRST_BOXES: [&[u8; 4]; 9] = [
        b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"sidx",
    ];
    head.len() == 8 && FIRST_BOXES.iter().any(|b| head[4..] == b[..])
}

/// What the top-level boxes of a file that starts like an MP4 say, from their headers only
/// (size, type, 64-bit size).
#[derive(Debug, Default)]
pub struct Mp4Layout {
    /// How many bytes the boxes declare beyond the file's end (an upload cut short), if any.
    pub shortfall: Option<u64>,
    /// It has movie fragments (`moof`): its length is in the fragments, while its headers may
    /// say 0 or "unknown" (all ones), which libav reads as a length of days.
    pub fragmented: bool,
}

/// The top-level box layout of a source that starts like an MP4; `None` for any other.
pub fn mp4_layout(origin: &Origin) -> Option<Mp4Layout> {
    if !starts_like_mp4(origin) {
        return None;
    }
    let len = origin.size().ok()?;
    match origin {
        Origin::File(path) => walk_boxes(std::fs::File::open(path).ok()?, len),
        Origin::Object(object) => walk_boxes(object.reader(BOX_WINDOW), len),
    }
}

fn walk_boxes(mut file: impl Read + Seek, len: u64) -> Option<Mp4Layout> {
    let mut layout = Mp4Layout::default();
    let mut at = 0u64;
    for _ in 0..1_000_000 {
        if at + 8 > len {
            break;
        }
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(at)).ok()?;
        let got = read_up_to(&mut file, &mut header).ok()?;
        layout.fragmented |= &header[4..8] == b"moof";
        let size = match u32::from_be_bytes(header[..4].try_into().ok()?) {
            0 => return Some(layout), // the last box, running to the end of the file
            1 if got == 16 => u64::from_be_bytes(header[8..].try_into().ok()?),
            1 => {
                layout.shortfall = Some(16 - got as u64);
                return Some(layout);
            }
            size => u64::from(size),
        };
        if size < 8 {
            return Some(Mp4Layout::default()); // not boxes after all: libav judges
        }
        at = at.checked_add(size)?;
    }
    layout.shortfall = (at > len).then(|| at - len);
    Some(layout)
}

/// Fills `buf` as far as the reader has bytes; how many it got.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Names the demuxer libav would pick from the first bytes, without letting it open anything.
fn guess_format(origin: &Origin) -> Option<String> {
    let mut head = origin.head(4096);
    let size = head.len() as i32;
    head.resize(head.len() + ff::ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let name = std::ffi::CString::new(origin.name()).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(name: &str, bytes: &[u8]) -> Result<(), MediaError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let limits = super::super::source::Limits {
            max_bytes: u64::MAX,
            max_seconds: u64::MAX,
        };
        super::super::source::probe(&path, limits).map(drop)
    }

    /// Bytes that are no media are never called cut short, whatever the name; an MP4 whose end
    /// is missing is, and says how much is missing.
    #[test]
    fn reasons_follow_the_bytes_not_the_name() {
        let noise: Vec<u8> = (0u32..200_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for name in ["noise.mp4", "noise.mov", "noise.mkv"] {
            let e = opened(name, &noise).unwrap_err();
            assert!(!matches!(e, MediaError::Truncated(_)), "{name}: {e}");
        }
        let e = opened("text.mp4", b"hello, this is not a video\n").unwrap_err();
        assert!(matches!(e, MediaError::Unreadable(_)), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("clip.mp4");
        crate::media::test_clip(&clip, 1, &[]);
        let whole = std::fs::read(&clip).unwrap();
        // moov is last: losing its tail, or half the file, leaves an MP4 without its index.
        let e = opened("cut.mp4", &whole[..whole.len() - 500]).unwrap_err();
        assert!(matches!(e, MediaError::Truncated(_)), "{e}");
        assert!(e.to_string().contains(" 500 bytes short"), "{e}");
        // Cut inside mdat: the moov after it is not even declared, so less is counted.
        let e = opened("half.mp4", &whole[..whole.len() / 2]).unwrap_err();
        assert!(e.to_string().contains(" bytes short"), "{e}");
        // A recording that never got its index: boxes whole, no moov.
        let mdat_only = [&[0, 0, 0, 8][..], b"mdat"].concat();
        let ftyp = u32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
        let no_index = [&whole[..ftyp], &mdat_only[..]].concat();
        let e = opened("unfinished.mp4", &no_index).unwrap_err();
        assert!(e.to_string().contains("never finished"), "{e}");
    }

    /// A source read as a store object through custom IO (ranged reads, a bounded window) gives
    /// libav the same packets as the file, keeps the same reasons for bad bytes, and opens
    /// nothing a playlist inside it names.
    #[test]
    fn objects_read_through_custom_io_match_the_file() {
        use crate::storage::{LocalStore, Store, StoreObject};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("clip.mp4");
        crate::media::test_clip(&clip, 2, &[]);
        let whole = std::fs::read(&clip).unwrap();
        std::fs::write(dir.path().join("cut.mp4"), &whole[..whole.len() - 500]).unwrap();
        let secret = dir.path().join("secret.ts");
        std::fs::copy(&clip, &secret).unwrap();
        let playlist = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile:{}\n#EXT-X-ENDLIST\n",
            secret.display()
        );
        std::fs::write(dir.path().join("list.mp4"), playlist).unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let object = |key: &str| {
            let opened = runtime.block_on(StoreObject::open(store.clone(), key));
            Origin::Object(Arc::new(opened.unwrap()))
        };
        let packets = |origin: &Origin| {
            let mut input = open_origin(origin, &ReadWatch::default()).unwrap();
            let sizes: Vec<usize> = input.packets().map(|(_, p)| p.size()).collect();
            (input.format().name().to_string(), sizes)
        };
        let from_object = object("clip.mp4");
        let (format, sizes) = packets(&from_object);
        assert_eq!(
            (format.clone(), sizes.clone()),
            packets(&Origin::File(clip))
        );
        assert!(
            format.contains("mp4") && sizes.len() > 10,
            "{format} {}",
            sizes.len()
        );
        let Origin::Object(read) = &from_object else {
            unreachable!()
        };
        let fetched = read.fetched().load(Ordering::Relaxed);
        assert!(fetched >= whole.len() as u64, "{fetched} bytes fetched");

        let limits = super::super::source::Limits {
            max_bytes: u64::MAX,
            max_seconds: u64::MAX,
        };
        let watch = ReadWatch::default();
        let probed = super::super::source::probe_watched(&from_object, limits, &watch).unwrap();
        assert!(probed.video.is_some() && probed.size_bytes == whole.len() as u64);
        let cut = super::super::source::probe_watched(&object("cut.mp4"), limits, &watch);
        assert!(cut.unwrap_err().to_string().contains(" 500 bytes short"));
        let e = open_origin(&object("list.mp4"), &ReadWatch::default()).err();
        assert!(matches!(e, Some(MediaError::RefusedFormat(_))), "{e:?}");
    }
}
