//! The player page (`GET /player/{id}`) in a real browser: headless Chromium driven through
//! ChromeDriver's WebDriver HTTP API, hls.js fetched from the npm registry at test time and
//! served from loopback. Needs `chromium`, `chromium-driver` and `curl` (`.ci/setup` installs
//! them); without them the tests fail rather than skip.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use video_transcoder::jobs::scheduler::{decoder_bytes, encoder_bytes};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The page plays the first tier while the next one waits, shows the progress, reloads the
/// master playlist when the next tier is published (keeping the position) and buffers as the
/// product spec says. The second tier is held back by the memory guard until the test lets
/// it go, so the order of events does not depend on encode speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_plays_while_tiers_encode() {
    let started = Instant::now();
    let ws = Workspace::new("player");
    // 540p is in the standard tier, 144p in the critical one: two passes, two masters.
    let clip = ws.clip("clip.mp4", 960, 540, 10.0, true);
    let hls_js = download_hls_js(ws.path()).await;
    let script_server = serve_file(&hls_js).await;
    let hls_js_url = format!("{script_server}/hls.min.js");
    let app = spawn_app(&[
        "--hls-js-url",
        &hls_js_url,
        "--ladder",
        "540:1200,144:200",
        "--decode-plan",
        "per-tier",
        "--memory-reserve-mb",
        "0",
    ])
    .await;
    // Memory for the 144p pass but not for the 540p one.
    let critical = decoder_bytes(960, 540) + encoder_bytes(256, 144);
    let standard = decoder_bytes(960, 540) + encoder_bytes(960, 540);
    assert!(critical < standard, "{critical} {standard}");
    app.memory
        .0
        .store((critical + standard) / 2, Ordering::Relaxed);
    // ChromeDriver and Chromium start before the upload, so the page can see the job encode.
    let browser = Browser::start(ws.path()).await;
    eprintln!("set up in {:.1?}", started.elapsed());

    let accepted = app.api.upload(&clip, None).await;
    assert_eq!(accepted.code, 202, "{:?}", accepted.body);
    let id = accepted.body["videoId"].as_str().unwrap().to_string();
    browser.open(&app.api.url(&format!("/player/{id}"))).await;

    // The first tier plays while the second waits, and the page says so.
    let playing = browser
        .wait_for("playback past 1 s", Duration::from_secs(120), |s| {
            s["time"].as_f64().unwrap_or(0.0) > 1.0
        })
        .await;
    eprintln!("playing at {:.1?}: {playing}", started.elapsed());
    assert_eq!(playing["engine"], "hls.js");
    assert_eq!(playing["levels"], 1);
    assert_eq!(playing["state"], "processing");
    let text = playing["text"].as_str().unwrap();
    assert!(
        text.starts_with("Processing: ")
            && text.contains(" %, 2/3 renditions")
            && text.ends_with("(playing the renditions ready so far)."),
        "{text}"
    );
    browser.assert_advancing().await;

    // Buffer limits for a desktop browser.
    let limits = browser
        .eval(
            "const c = window.player.hls.config; return {mobile: window.player.mobile, \
             back: c.backBufferLength, forward: c.maxBufferLength, max: c.maxMaxBufferLength};",
        )
        .await;
    assert_eq!(
        limits,
        json!({"mobile": false, "back": 30, "forward": 120, "max": 120})
    );

    // Let the second tier encode: the page reloads the master, keeps its place, plays on.
    let before = browser.snapshot().await;
    app.memory.0.store(64 << 30, Ordering::Relaxed);
    let reloaded = browser
        .wait_for("the second tier in hls.js", Duration::from_secs(60), |s| {
            s["levels"] == 2
                && s["reloads"] == 1
                && s["readyState"].as_u64().unwrap_or(0) >= 2
                && s["seeking"] == false
        })
        .await;
    eprintln!("reloaded at {:.1?}: {reloaded}", started.elapsed());
    let (was, now) = (
        before["time"].as_f64().unwrap(),
        reloaded["time"].as_f64().unwrap(),
    );
    assert!(
        now >= was,
        "the reload lost the position: at {now} s, was at {was} s"
    );
    browser.assert_advancing().await;

    // The job ends ready; the page shows it and stops there.
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    let done = browser
        .wait_for("the final status", Duration::from_secs(10), |s| {
            s["state"] == "ready"
        })
        .await;
    assert_eq!(done["text"], "Ready: 3/3 renditions encoded.");
    assert_eq!(done["notice"], "", "the page reported a problem");
    assert_eq!(done["levels"], 2);
    let history = done["history"].as_array().unwrap();
    let states: Vec<&str> = history.iter().filter_map(|h| h["state"].as_str()).collect();
    eprintln!("states the page showed: {states:?}");
    assert_eq!(states.last(), Some(&"ready"), "{history:#?}");
    for h in history {
        if h["state"] == "processing" {
            let text = h["text"].as_str().unwrap();
            assert!(text.contains(" %, "), "no progress shown: {text}");
        }
    }

    browser.close().await;
    app.stop().await;
    eprintln!("done in {:.1?}", started.elapsed());
}

/// hls.js that does not load is reported on the page, and settings with markup in them stay
/// data: nothing in them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_page_reports_missing_hls_js() {
    let ws = Workspace::new("player_missing");
    let script_server = serve_file(&ws.path().join("nothing.js")).await;
    let injection = "</script><script>window.injected=1</script><!--";
    let hls_js_url = format!("{script_server}/missing/hls.min.js?\"'{injection}");
    let base = format!("http://127.0.0.1:9/cdn\"'{injection}");
    let app = spawn_app(&["--hls-js-url", &hls_js_url, "--public-base-url", &base]).await;

    let (code, html) = app.api.text("/player/no-such-video").await;
    assert_eq!(code, 200);
    assert!(!html.contains("<script>window.injected"), "{html}");
    let (code, _) = app.api.text("/player/bad%20id").await;
    assert_eq!(code, 400);

    let browser = Browser::start(ws.path()).await;
    browser.open(&app.api.url("/player/no-such-video")).await;
    let shown = browser
        .wait_for("the notice and the status", Duration::from_secs(30), |s| {
            s["notice"] != "" && s["state"] == "missing"
        })
        .await;
    let notice = shown["notice"].as_str().unwrap();
    assert!(
        notice.starts_with(&format!(
            "Could not load the video player library (hls.js) from {hls_js_url}. "
        )),
        "{notice}"
    );
    assert_eq!(shown["text"], "No video no-such-video.");
    let page = browser
        .eval(
            "return {injected: window.injected ?? null, config: JSON.parse(\
             document.getElementById('config').textContent)};",
        )
        .await;
    assert_eq!(
        page,
        json!({"injected": null, "config": {
            "id": "no-such-video", "base": base, "hlsJsUrl": hls_js_url}})
    );
    browser.close().await;
    app.stop().await;
}

/// Downloads the newest hls.js 1.x from the npm registry (checking the tarball's integrity)
/// and returns the path of its `dist/hls.min.js`. `curl` does the HTTPS: the crate's reqwest
/// is built without TLS.
async fn download_hls_js(dir: &Path) -> PathBuf {
    let dir = dir.join("hls.js");
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).unwrap();
        let registry = "https://registry.npmjs.org/hls.js";
        let mut release: Value = serde_json::from_slice(&curl(&[&format!("{registry}/latest")]))
            .expect("the registry answers JSON");
        if !release["version"].as_str().unwrap_or("").starts_with("1.") {
            // The page is written for hls.js 1.x (the service's default URL is hls.js@1).
            let all: Value = serde_json::from_slice(&curl(&[
                "-H",
                "Accept: application/vnd.npm.install-v1+json",
                registry,
            ]))
            .unwrap();
            let newest = all["versions"]
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(v, release)| {
                    let rest = v.strip_prefix("1.").filter(|r| !r.contains('-'))?;
                    let (minor, patch) = rest.split_once('.')?;
                    Some((
                        (minor.parse::<u32>().ok()?, patch.parse::<u32>().ok()?),
                        release,
                    ))
                })
                .max_by_key(|(v, _)| *v)
                .expect("the registry lists hls.js 1.x");
            release = newest.1.clone();
        }
        let version = release["version"].as_str().unwrap_or("?").to_string();
        let tarball = release["dist"]["tarball"].as_str().unwrap();
        let integrity = release["dist"]["integrity"].as_str().unwrap();
        let archive = dir.join("hls.js.tgz");
        curl(&["-o", archive.to_str().unwrap(), tarball]);
        let expected = integrity
            .strip_prefix("sha512-")
            .expect("a sha512 integrity");
        assert_eq!(
            sha512_base64(&archive),
            expected,
            "hls.js {version}: the tarball does not match its integrity"
        );
        let out = Command::new("tar")
            .args([
                "-xzf",
                archive.to_str().unwrap(),
                "-C",
                dir.to_str().unwrap(),
            ])
            .arg("package/dist/hls.min.js")
            .output()
            .expect("tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("hls.js {version} from {tarball}");
        dir.join("package/dist/hls.min.js")
    })
    .await
    .unwrap()
}

/// `curl -fsSL <args>`'s output; panics with curl's message when it fails.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-fsSL", "--retry", "2", "--max-time", "120"])
        .args(args)
        .output()
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The file's SHA-512 in base64, as npm's `integrity` has it.
fn sha512_base64(path: &Path) -> String {
    use base64::Engine;
    let out = Command::new("sha512sum")
        .arg(path)
        .output()
        .expect("sha512sum");
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.split_whitespace().next().unwrap_or("");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Serves `file` (if it exists) as `/hls.min.js` on 127.0.0.1; every other path is 404.
/// Returns the base URL; the server lives as long as the test's runtime.
async fn serve_file(file: &Path) -> String {
    let body = std::fs::read(file).unwrap_or_default();
    let exists = file.exists();
    let router = axum::Router::new().route(
        "/hls.min.js",
        axum::routing::get(move || async move {
            match exists {
                true => axum::response::Response::builder()
                    .header("content-type", "text/javascript")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
                false => axum::response::Response::builder()
                    .status(404)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// What the page shows, read in one script: the job state and text of the status element,
/// the notice, the video element and hls.js.
const SNAPSHOT: &str = "
const p = window.player, s = document.getElementById('status');
const n = document.getElementById('notice');
if (!p) return {state: s && s.dataset.state, text: s && s.textContent, notice: n && n.textContent};
const v = p.video;
return {state: s.dataset.state, text: s.textContent, notice: n.textContent,
  time: v.currentTime, paused: v.paused, ended: v.ended, seeking: v.seeking,
  readyState: v.readyState, engine: p.engine, variants: p.variants, reloads: p.reloads,
  reloadedAt: p.reloadedAt,
  levels: p.hls ? p.hls.levels.length : null, history: p.history};";

/// ChromeDriver (in a process group of its own, with the Chromium it starts) and one session.
/// Dropping it kills the whole group, so no browser outlives a failed test.
struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Browser {
    async fn start(dir: &Path) -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the player tests need Debian's chromium and chromium-driver \
                 (run .ci/setup, or apt-get install chromium chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut browser = Self {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: reqwest::Client::new(),
            log,
        };
        let started = Instant::now();
        loop {
            let ready = browser.http.get(format!("{}/status", browser.url)).send();
            if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), ready).await
                && let Ok(status) = answer.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start: {}",
                browser.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_string();
        browser
    }

    /// A WebDriver command; panics on an error answer.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let answer = tokio::time::timeout(Duration::from_secs(60), request.send())
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path} timed out"))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let code = answer.status();
        let value: Value = answer.json().await.unwrap_or(Value::Null);
        assert!(
            code.is_success(),
            "WebDriver {method} {path}: {code} {value}\n{}",
            self.log_tail()
        );
        value["value"].clone()
    }

    async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({"script": script, "args": []})))
            .await
    }

    async fn snapshot(&self) -> Value {
        self.eval(SNAPSHOT).await
    }

    /// Polls the page until `done(snapshot)`; fails with the page's state and console after
    /// `timeout`.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let snapshot = self.snapshot().await;
            if done(&snapshot) {
                return snapshot;
            }
            if started.elapsed() > timeout {
                panic!(
                    "no {what} after {timeout:?}: {snapshot:#}\nconsole: {:#}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The video plays on: two readings 0.5 s apart, with no reload between them, grow.
    async fn assert_advancing(&self) {
        let started = Instant::now();
        loop {
            let a = self.snapshot().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let b = self.snapshot().await;
            let (t0, t1) = (a["time"].as_f64().unwrap(), b["time"].as_f64().unwrap());
            if a["reloads"] == b["reloads"] && t1 > t0 + 0.1 && t0 > 0.0 {
                return;
            }
            if started.elapsed() > Duration::from_secs(15) {
                panic!(
                    "playback does not advance ({t0} s, then {t1} s): {b:#}\nconsole: {:#}",
                    self.console().await
                );
            }
        }
    }

    /// The browser console so far (ChromeDriver's legacy log endpoint), for failure messages.
    async fn console(&self) -> Value {
        let url = format!("{}/session/{}/se/log", self.url, self.session);
        match self
            .http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        {
            Ok(answer) => answer.json::<Value>().await.unwrap_or_default()["value"].clone(),
            Err(e) => json!(e.to_string()),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("chromedriver log tail:\n{}", &text[start..])
    }

    /// Ends the session (ChromeDriver closes Chromium); `Drop` kills what is left.
    async fn close(self) {
        let path = format!("/session/{}", self.session);
        self.call("DELETE", &path, None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver leads its own process group, which holds the Chromium it started.
        let group = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group only: ours.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
