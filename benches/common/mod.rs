//! What the benchmarks share: the release server as a process (killed when dropped, panics
//! included), its memory read from /proc, and clips generated once into `target/bench-data/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the benchmark's temporary folders go: `target/tmp`, on the real disk (not a tmpfs).
fn scratch_root() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A kB field (`VmRSS`, `VmHWM`) of /proc/<pid>/status, in bytes.
pub fn memory(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `video-transcoder serve` started from the release binary, with its own folder holding its
/// scratch, its local stores (when it uses them) and its log.
pub struct Server {
    child: Child,
    pub base: String,
    root: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `settings` on top of PORT=0 and JSON logs; waits for "serving".
    pub fn start(name: &str, settings: &[(&str, String)]) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("vt-bench-{name}-"))
            .tempdir_in(scratch_root())
            .unwrap();
        let log = root.path().join("server.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
        command
            .arg("serve")
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("INPUT_STORE", root.path().join("input"))
            .env("OUTPUT_STORE", root.path().join("cdn"))
            .env("SCRATCH_DIR", root.path().join("scratch"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        for (key, value) in settings {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn video-transcoder serve");
        let mut server = Server {
            child,
            base: String::new(),
            root,
        };
        let started = Instant::now();
        server.base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let address = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "serving")
                .and_then(|l| l["address"].as_str().map(str::to_owned));
            if let Some(address) = address {
                break format!("http://{address}");
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the server exited ({status}):\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The local input store (used when INPUT_STORE is not overridden).
    pub fn input_dir(&self) -> PathBuf {
        self.root.path().join("input")
    }

    /// The local output store (used when OUTPUT_STORE is not overridden).
    pub fn cdn_dir(&self) -> PathBuf {
        self.root.path().join("cdn")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.root.path().join("scratch")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The clip, generated on first use into `target/bench-data/`.
pub fn clip(name: &str, lavfi: &str, seconds: u32) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("bench-data");
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    println!("generating {} ...", path.display());
    let tmp = dir.join(format!("tmp-{name}"));
    let ok = Command::new("ffmpeg")
        .args("-hide_banner -nostdin -loglevel error -y -f lavfi -i".split(' '))
        .arg(lavfi)
        .args("-f lavfi -i sine=frequency=440:sample_rate=48000 -t".split(' '))
        .arg(seconds.to_string())
        .args("-c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 60 -c:a aac -b:a 128k".split(' '))
        .arg(&tmp)
        .status()
        .expect("ffmpeg not found")
        .success();
    assert!(ok, "generating {name} failed");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The benchmarks' 1080p30 source with audio, `seconds` long with a `gop`-frame GOP (testsrc2 +
/// sine, x264 veryfast ~8 Mb/s, AAC 128k 48 kHz stereo, MP4 faststart), generated on first use
/// into `target/bench-data/`.
pub fn source(seconds: u32, gop: u32) -> PathBuf {
    // The bench executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("bench-data");
    let src = match (seconds, gop) {
        (30, 60) => dir.join("src-1080p30-30s-8M.mp4"),
        _ => dir.join(format!("src-1080p30-{seconds}s-8M-g{gop}.mp4")),
    };
    if src.exists() {
        return src;
    }
    std::fs::create_dir_all(&dir).unwrap();
    println!("generating {} ...", src.display());
    let tmp = dir.join(format!(
        "tmp-{}",
        src.file_name().unwrap().to_string_lossy()
    ));
    let args = format!(
        "-hide_banner -nostdin -loglevel error -y \
         -f lavfi -i testsrc2=size=1920x1080:rate=30 \
         -f lavfi -i sine=frequency=440:sample_rate=48000 -t {seconds} \
         -c:v libx264 -preset veryfast -pix_fmt yuv420p -g {gop} -b:v 8M -maxrate 8M -bufsize 16M \
         -c:a aac -b:a 128k -ar 48000 -ac 2 -movflags +faststart"
    );
    let ok = Command::new("ffmpeg")
        .args(args.split_whitespace())
        .arg(&tmp)
        .status()
        .expect("ffmpeg not found")
        .success();
    assert!(ok, "generating the source failed");
    std::fs::rename(&tmp, &src).unwrap();
    src
}
