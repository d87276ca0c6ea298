//! Headless Chromium driven through ChromeDriver's WebDriver HTTP API: Debian's `chromium` and
//! `chromium-driver`, one session per [`Browser`], everything killed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver (in a process group of its own, with the Chromium it starts) and one session.
/// Dropping it kills the whole group, so no browser outlives a failed test.
pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session, with the profile and
    /// ChromeDriver's log under `dir`.
    pub async fn start(dir: &Path) -> Self {
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

    /// Loads `url` in the page.
    pub async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({"script": script, "args": []})))
            .await
    }

    /// [`Browser::eval`] with `arguments` for the script.
    pub async fn eval_with(&self, script: &str, args: &[Value]) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({"script": script, "args": args})))
            .await
    }

    /// Moves the mouse over the element `selector`, `fraction` of its width from its left edge
    /// (WebDriver actions: the browser sees a real pointer move).
    pub async fn hover(&self, selector: &str, fraction: f64) {
        let path = format!("/session/{}/element", self.session);
        let element = self
            .call(
                "POST",
                &path,
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        let reference = element["element-6066-11e4-a52e-4f735466cecf"].clone();
        let rect = self
            .eval_with(
                "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                &[json!({"element-6066-11e4-a52e-4f735466cecf": reference})],
            )
            .await;
        // Offsets are from the element's centre.
        let x = ((fraction - 0.5) * rect[0].as_f64().unwrap()).round() as i64;
        let origin = json!({"element-6066-11e4-a52e-4f735466cecf": reference});
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "duration": 0, "origin": origin, "x": x, "y": 0}]}]});
        let path = format!("/session/{}/actions", self.session);
        self.call("POST", &path, Some(actions)).await;
    }

    /// Sends `headers` with every request the page makes from now on (DevTools'
    /// `Network.setExtraHTTPHeaders`, as an authenticating proxy in front of the service would).
    pub async fn send_headers(&self, headers: Value) {
        let path = format!("/session/{}/goog/cdp/execute", self.session);
        let enable = json!({"cmd": "Network.enable", "params": {}});
        self.call("POST", &path, Some(enable)).await;
        let set = json!({"cmd": "Network.setExtraHTTPHeaders", "params": {"headers": headers}});
        self.call("POST", &path, Some(set)).await;
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let shot = self
            .call(
                "GET",
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("a base64 screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::write(path, png).unwrap();
    }

    /// The browser console so far (ChromeDriver's legacy log endpoint), for failure messages.
    pub async fn console(&self) -> Value {
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
    pub async fn close(self) {
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
