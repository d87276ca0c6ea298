//! A real Cloud Storage emulator (fake-gcs-server, installed by .ci/setup) for tests.
//!
//! The storage client sends `Host` without a port and the emulator builds its resumable-upload
//! URLs from that header, so each emulator listens on port 80 of its own loopback address
//! (127.0.0.x). Objects live in a folder, so a stopped and restarted emulator keeps them.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The next loopback address to try; tests in one binary run at once and need one each.
static NEXT_ADDRESS: AtomicU8 = AtomicU8::new(20);

pub struct Emulator {
    pub address: Ipv4Addr,
    root: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts an emulator holding empty `buckets`, its objects in the system's temp folder.
    pub async fn start(buckets: &[&str]) -> Self {
        Self::start_in(&std::env::temp_dir(), buckets).await
    }

    /// Starts an emulator holding empty `buckets`, its objects in a new folder under `parent`.
    pub async fn start_in(parent: &std::path::Path, buckets: &[&str]) -> Self {
        let address = loop {
            let last = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
            assert!(last < 250, "no free loopback address for an emulator");
            let address = Ipv4Addr::new(127, 0, 0, last);
            if TcpListener::bind((address, 80)).is_ok() {
                break address;
            }
        };
        let mut emulator = Self {
            address,
            root: tempfile::tempdir_in(parent).unwrap(),
            child: None,
            http: reqwest::Client::new(),
        };
        emulator.resume().await;
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

    /// The base URL the service's `GCS_ENDPOINT` takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The public URL of an object, as a CDN in front of the bucket would serve it.
    pub fn public_url(&self, bucket: &str, key: &str) -> String {
        self.url(&format!("/{bucket}/{key}"))
    }

    /// Stops the emulator (SIGKILL: as abrupt as a network failure); its objects stay on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the emulator again on the same address and objects, and waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.root.path().join("emulator.log")).unwrap();
        let child = Command::new("fake-gcs-server")
            .args(["-scheme", "http", "-port", "80", "-backend", "filesystem"])
            .args(["-host", &self.address.to_string()])
            .args(["-public-host", &self.address.to_string()])
            .args(["-log-level", "warn"])
            .arg("-filesystem-root")
            .arg(self.objects_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("fake-gcs-server is on the PATH (.ci/setup installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers().await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the emulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn answers(&self) -> bool {
        let list = self.http.get(self.url("/storage/v1/b")).send().await;
        matches!(list, Ok(r) if r.status().is_success())
    }

    /// The filesystem backend's folder: `<bucket>/<key>` files, their metadata in an xattr.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.path().join("objects")
    }

    /// Freezes the emulator (SIGSTOP): connections stay open and nothing answers, as with a
    /// bucket that has become very slow. `thaw` lets it go on.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("the emulator runs") as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The emulator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Uploads `bytes` (a buffer, or a stream) as `bucket/key`.
    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<reqwest::Body>) {
        let answer = self
            .http
            .post(self.url(&format!("/upload/storage/v1/b/{bucket}/o")))
            .query(&[("uploadType", "media"), ("name", key)])
            .body(bytes.into())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "uploading {bucket}/{key}");
    }

    /// An object's bytes, or `None` if it does not exist.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let answer = self
            .http
            .get(self.public_url(bucket, key))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            404 => None,
            200 => Some(answer.bytes().await.unwrap().to_vec()),
            code => panic!("GET {bucket}/{key}: HTTP {code}"),
        }
    }

    /// An object's metadata (the JSON API's resource: `contentType`, `cacheControl`, `size`…).
    pub async fn metadata(&self, bucket: &str, key: &str) -> Option<Value> {
        let mut url = reqwest::Url::parse(&self.endpoint()).unwrap();
        url.path_segments_mut()
            .unwrap()
            .extend(["storage", "v1", "b", bucket, "o", key]);
        let answer = self.http.get(url).send().await.unwrap();
        match answer.status().as_u16() {
            404 => None,
            200 => Some(answer.json().await.unwrap()),
            code => panic!("metadata of {bucket}/{key}: HTTP {code}"),
        }
    }

    /// Deletes `bucket/key`.
    pub async fn delete(&self, bucket: &str, key: &str) {
        let mut url = reqwest::Url::parse(&self.endpoint()).unwrap();
        url.path_segments_mut()
            .unwrap()
            .extend(["storage", "v1", "b", bucket, "o", key]);
        let answer = self.http.delete(url).send().await.unwrap();
        assert!(answer.status().is_success(), "deleting {bucket}/{key}");
    }

    /// Names of the objects in `bucket` under `prefix`.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let answer: Value = self
            .http
            .get(self.url(&format!("/storage/v1/b/{bucket}/o")))
            .query(&[("prefix", prefix)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut names: Vec<String> = answer["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
