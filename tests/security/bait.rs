//! What hostile sources point at, and the proof that nothing took the bait: canary files
//! (real media, and text with a marker) whose access time shows any read and whose content
//! must not appear in any output, and a loopback TCP listener that must see no connection.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::common::*;

/// A string only the text canary holds.
pub const MARKER: &str = "CANARY-5f0c2b7e-never-to-be-read";

pub struct Bait {
    /// Real media (MPEG-TS, H.264), so a demuxer that followed a reference to it would succeed.
    pub media: PathBuf,
    /// Text holding [`MARKER`], like a secret on the machine.
    pub text: PathBuf,
    listener: TcpListener,
}

impl Bait {
    /// Canaries `canary.ts` and `canary.txt` in `dir` (put them next to the source so relative
    /// references resolve to them), and a listener on 127.0.0.1.
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        let media = dir.join("canary.ts");
        let text = dir.join("canary.txt");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            media.to_str().unwrap(),
        ]);
        fs::write(&text, format!("root:x:0:0:{MARKER}:/root:/bin/sh\n")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let bait = Self {
            media,
            text,
            listener,
        };
        bait.arm();
        bait
    }

    /// A URL on the listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.listener.local_addr().unwrap())
    }

    /// Sets the canaries' access time far in the past: with `relatime` (or `strictatime`) any
    /// read moves it to now.
    pub fn arm(&self) {
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for file in [&self.media, &self.text] {
            let f = fs::File::options().write(true).open(file).unwrap();
            f.set_times(fs::FileTimes::new().set_accessed(past))
                .unwrap();
        }
    }

    /// The canaries read since [`Bait::arm`].
    pub fn read_since_armed(&self) -> Vec<&Path> {
        let armed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_001);
        [&self.media, &self.text]
            .into_iter()
            .filter(|f| fs::metadata(f).unwrap().accessed().unwrap() > armed)
            .map(PathBuf::as_path)
            .collect()
    }

    /// Nothing connected to the listener, no canary was read, and no file under `outputs`
    /// holds the marker.
    pub fn assert_untouched(&self, what: &str, outputs: &[&Path]) {
        if let Ok((mut conn, _)) = self.listener.accept() {
            let mut head = [0u8; 256];
            conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let n = conn.read(&mut head).unwrap_or(0);
            panic!(
                "{what}: something connected to the loopback listener: {}",
                String::from_utf8_lossy(&head[..n])
            );
        }
        let read = self.read_since_armed();
        assert!(read.is_empty(), "{what}: the canaries {read:?} were read");
        for dir in outputs {
            for file in files_under(dir) {
                let bytes = fs::read(dir.join(&file)).unwrap_or_default();
                assert!(
                    !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                    "{what}: {file} holds the canary's content"
                );
            }
        }
    }
}

/// `mp4` with every data reference (`dref`) replaced by a Macintosh alias naming `target`
/// relative to the file's own folder: with `enable_drefs` on, libav's mov demuxer reads the
/// track's samples from `target` instead of the file. `mp4` must have its `moov` after `mdat`
/// (the ffmpeg CLI's default), so the grown `moov` moves no sample.
pub fn with_external_reference(mp4: &[u8], target: &str) -> Vec<u8> {
    fn alias(target: &str) -> Vec<u8> {
        let mut path = format!("/{target}").into_bytes();
        if path.len() % 2 == 1 {
            path.push(0);
        }
        let mut name = target.as_bytes().to_vec();
        name.resize(63, 0);
        let mut body = vec![0u8; 10]; // creator, record size, version, kind
        body.push(0); // volume name length
        body.extend([0u8; 27]); // volume name
        body.extend([0u8; 12]); // volume date, fs type, disk type
        body.push(target.len() as u8);
        body.extend(name); // file name
        body.extend([0u8; 16]); // parent and file ids, date, type, creator
        body.extend(1u16.to_be_bytes()); // levels up from the alias to the common folder
        body.extend(1u16.to_be_bytes()); // levels down from it to the target
        body.extend([0u8; 16]);
        body.extend(2u16.to_be_bytes()); // record: absolute path
        body.extend((path.len() as u16).to_be_bytes());
        body.extend(path);
        body.extend((-1i16).to_be_bytes()); // end of records
        body.extend(0u16.to_be_bytes());
        let mut entry = ((12 + body.len()) as u32).to_be_bytes().to_vec();
        entry.extend(b"alis");
        entry.extend([0u8; 4]); // version, flags: 0 = the data is elsewhere
        entry.extend(body);
        entry
    }
    fn rewrite(boxes: &[u8], target: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= boxes.len() {
            let size = u32::from_be_bytes(boxes[at..at + 4].try_into().unwrap()) as usize;
            let kind = &boxes[at + 4..at + 8];
            let payload = &boxes[at + 8..at + size];
            let payload = match kind {
                b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" => rewrite(payload, target),
                b"dref" => {
                    let mut dref = vec![0u8; 4]; // version, flags
                    dref.extend(1u32.to_be_bytes()); // one entry
                    dref.extend(alias(target));
                    dref
                }
                _ => payload.to_vec(),
            };
            out.extend(((payload.len() + 8) as u32).to_be_bytes());
            out.extend(kind);
            out.extend(payload);
            at += size;
        }
        out
    }
    let out = rewrite(mp4, target);
    assert!(
        out.len() > mp4.len(),
        "no dref found: is this an MP4 with moov last?"
    );
    out
}
