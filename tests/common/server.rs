//! A real server for tests: `spawn_app` runs the service in-process on 127.0.0.1:0 with its own
//! temp stores (and a memory reading the test controls); `ServerProcess` runs the binary, for
//! tests that signal it. `Api` is a small HTTP client for both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::multipart::Form;
use serde_json::Value;
use tokio::sync::oneshot;
use video_transcoder::config::ServeSettings;
use video_transcoder::jobs::scheduler::FixedMemory;

/// Longest a test waits for a job to reach a final state.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Available memory as `spawn_app` starts it: more than any test's encodes need.
pub const PLENTY_OF_MEMORY: u64 = 64 << 30;

#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    serve: ServeSettings,
}

/// Settings as the service parses them from `args` (e.g. `["--max-queued-jobs", "1"]`), with
/// stores and scratch under `root` unless `args` name them.
pub fn settings(root: &Path, args: &[&str]) -> ServeSettings {
    let mut all = vec!["serve".to_string()];
    for (flag, dir) in [
        ("--input-store", "input"),
        ("--output-store", "cdn"),
        ("--scratch-dir", "scratch"),
    ] {
        if args.contains(&flag) {
            continue;
        }
        all.push(flag.into());
        all.push(root.join(dir).to_string_lossy().into_owned());
    }
    all.extend(args.iter().map(|a| a.to_string()));
    Settings::try_parse_from(all)
        .unwrap_or_else(|e| panic!("bad test settings: {e}"))
        .serve
}

/// The service running in this process.
pub struct TestApp {
    pub api: Api,
    pub root: tempfile::TempDir,
    /// Available memory as the memory guard sees it; starts at [`PLENTY_OF_MEMORY`].
    pub memory: Arc<FixedMemory>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts the service on 127.0.0.1:0 with fresh stores; `args` are extra command-line settings.
pub async fn spawn_app(args: &[&str]) -> TestApp {
    video_transcoder::telemetry::init("info");
    let root = tempfile::tempdir().unwrap();
    let settings = settings(root.path(), args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let memory = Arc::new(FixedMemory(AtomicU64::new(PLENTY_OF_MEMORY)));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(video_transcoder::server::serve(
        listener,
        settings,
        memory.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    TestApp {
        api: Api::new(&format!("http://{address}")),
        root,
        memory,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn input_dir(&self) -> PathBuf {
        self.root.path().join("input")
    }

    pub fn cdn_dir(&self) -> PathBuf {
        self.root.path().join("cdn")
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.root.path().join("scratch")
    }

    /// Copies `clip` into the input store as `key`.
    pub fn put_input(&self, key: &str, clip: &Path) {
        let to = self.input_dir().join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(clip, &to).unwrap();
    }

    /// Sets available memory to 0: jobs get planned, then wait in the scheduler.
    pub fn hold_encodes(&self) {
        self.memory.0.store(0, Ordering::Relaxed);
    }

    /// Gives back [`PLENTY_OF_MEMORY`]: held encodes start.
    pub fn release_encodes(&self) {
        self.memory.0.store(PLENTY_OF_MEMORY, Ordering::Relaxed);
    }

    /// Sends the shutdown signal and waits for the service to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the service stopped within 30 s")
            .unwrap()
            .expect("the service returned Ok");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The binary serving on a port it picked itself (`PORT=0`), for tests that send it signals.
pub struct ServerProcess {
    pub api: Api,
    pub child: Child,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Runs `video-transcoder serve` with stores under `root` and extra `env`.
    pub fn start(root: &Path, env: &[(&str, &str)]) -> Self {
        let log = root.join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
        command
            .arg("serve")
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("INPUT_STORE", root.join("input"))
            .env("OUTPUT_STORE", root.join("cdn"))
            .env("SCRATCH_DIR", root.join("scratch"))
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn video-transcoder serve");
        let started = Instant::now();
        let address = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(address) = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "serving")
                .and_then(|l| l["address"].as_str().map(str::to_owned))
            {
                break address;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            api: Api::new(&format!("http://{address}")),
            child,
            log,
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A JSON answer: status code, headers and body (JSON, or `Null` if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Reads a response: status, headers, JSON body or `Null`.
    pub async fn read(response: reqwest::Response) -> Self {
        Self::try_read(response).await.unwrap()
    }

    /// [`Answer::read`], or the error when the body could not be read.
    pub async fn try_read(response: reqwest::Response) -> Result<Self, reqwest::Error> {
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok(Self {
            code,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
}

/// A client for the service's API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /upload` with `file` (streamed from disk) and an optional raw `metadata` part.
    pub async fn upload(&self, file: &Path, metadata: Option<&str>) -> Answer {
        let mut form = Form::new().file("file", file).await.unwrap();
        if let Some(metadata) = metadata {
            form = form.text("metadata", metadata.to_string());
        }
        self.upload_form(form).await
    }

    /// `POST /upload` of `file` that must be accepted (202); returns the new videoId.
    pub async fn upload_accepted(&self, file: &Path) -> String {
        let accepted = self.upload(file, None).await;
        assert_eq!(accepted.code, 202, "{:?}", accepted.body);
        accepted.body["videoId"].as_str().unwrap().to_string()
    }

    /// `POST /upload` with a hand-made multipart form.
    pub async fn upload_form(&self, form: Form) -> Answer {
        self.try_upload_form(form).await.unwrap()
    }

    /// `POST /upload` over HTTP/1.1; `Err` when the client got no answer at all (e.g. the
    /// server closed the connection while the body was still being sent).
    pub async fn try_upload_form(&self, form: Form) -> Result<Answer, reqwest::Error> {
        let response = self
            .http
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .await?;
        Answer::try_read(response).await
    }

    /// `POST /transcode` with a JSON body and extra headers (for CloudEvents).
    pub async fn trigger(&self, body: &Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .http
            .post(self.url("/transcode"))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Answer::read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn text(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn status(&self, id: &str) -> Value {
        let answer = self.get(&format!("/video-status/{id}")).await;
        assert_eq!(answer.code, 200, "status of {id}: {:?}", answer.body);
        answer.body
    }

    /// Polls the status until `done(status)` holds; panics after `JOB_TIMEOUT`.
    pub async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(id).await;
            if done(&status) {
                return status;
            }
            assert!(
                started.elapsed() < JOB_TIMEOUT,
                "job {id} still not there after {JOB_TIMEOUT:?}: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until the job is in a final state and returns that status.
    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_for(id, |s| {
            !matches!(s["state"].as_str(), Some("queued" | "processing"))
        })
        .await
    }
}
