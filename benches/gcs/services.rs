//! The processes the benchmark runs: the release server and the fake-gcs-server emulator, both
//! killed when dropped (panics included), and their memory read from /proc.

use std::net::{Ipv4Addr, TcpListener};
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
            .prefix(&format!("vt-gcs-bench-{name}-"))
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

/// fake-gcs-server on port 80 of its own loopback address (the storage client drops the port
/// from `Host`, and the emulator builds its resumable-upload URLs from that header), keeping
/// its objects in a folder on disk.
pub struct Emulator {
    pub address: Ipv4Addr,
    child: Child,
    http: reqwest::Client,
    _root: tempfile::TempDir,
}

impl Emulator {
    /// Starts an emulator on the first free address from 127.0.0.200 and creates `buckets`.
    pub async fn start(buckets: &[&str]) -> Self {
        let address = (200..=250)
            .map(|last| Ipv4Addr::new(127, 0, 0, last))
            .find(|&a| TcpListener::bind((a, 80)).is_ok())
            .expect("no free loopback address in 127.0.0.200–250 for the emulator");
        let root = tempfile::Builder::new()
            .prefix("vt-gcs-bench-emulator-")
            .tempdir_in(scratch_root())
            .unwrap();
        let log = std::fs::File::create(root.path().join("emulator.log")).unwrap();
        let child = Command::new("fake-gcs-server")
            .args(["-scheme", "http", "-port", "80", "-backend", "filesystem"])
            .args(["-host", &address.to_string()])
            .args(["-public-host", &address.to_string()])
            .args(["-log-level", "warn"])
            .arg("-filesystem-root")
            .arg(root.path().join("objects"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("fake-gcs-server is on the PATH (.ci/setup installs it)");
        let emulator = Self {
            address,
            child,
            http: reqwest::Client::new(),
            _root: root,
        };
        let started = Instant::now();
        loop {
            let list = emulator
                .http
                .get(emulator.url("/storage/v1/b"))
                .send()
                .await;
            if matches!(list, Ok(r) if r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the emulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for bucket in buckets {
            let answer = emulator
                .http
                .post(emulator.url("/storage/v1/b"))
                .json(&serde_json::json!({ "name": bucket }))
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "creating bucket {bucket}");
        }
        emulator
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The base URL the service's `GCS_ENDPOINT` takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Uploads `body` as `bucket/key` (a simple media upload).
    pub async fn put(&self, bucket: &str, key: &str, body: reqwest::Body) {
        let answer = self
            .http
            .post(self.url(&format!("/upload/storage/v1/b/{bucket}/o")))
            .query(&[("uploadType", "media"), ("name", key)])
            .body(body)
            .send()
            .await
            .unwrap();
        let code = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(code.is_success(), "uploading {bucket}/{key}: {code} {text}");
    }

    /// Whether `bucket/key` can be fetched from its public URL (as a CDN would serve it).
    pub async fn fetchable(&self, bucket: &str, key: &str) -> bool {
        let answer = self
            .http
            .get(self.url(&format!("/{bucket}/{key}")))
            .send()
            .await;
        matches!(answer, Ok(r) if r.status().as_u16() == 200)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
