//! Status latency benchmark. Run: `cargo bench --bench status_latency`
//! (env `BENCH_SECONDS`, default 10, and `BENCH_RATE`, default 1000 requests/s).
//!
//! Starts the release binary (`serve`, PORT=0, temp stores, MAX_PARALLEL_ENCODES = CPU count)
//! and measures `GET /video-status/{id}` at a fixed rate with an open-loop schedule: request i
//! is sent at t0 + i/rate, each from its own task on a pooled keep-alive client, and its latency
//! runs from that *scheduled* time to the end of the body, so a stalled server (or a starved
//! client) is charged for the requests it held up (no coordinated omission). Phases, in order:
//!   idle           — nothing encoding; the status of a small finished warm-up job (read from
//!                    status.json in the output store);
//!   load, running  — three uploads of a generated 1080p30 20 s clip (testsrc2 + sine, x264
//!                    ultrafast; cached in `target/bench-data/`) encoding; the status of a running
//!                    job (served from memory);
//!   load, finished — the same load; the warm-up job's status again: the idle phase's peer.
//! For each: requests sent, errors, achieved rate, p50/p90/p99/max, the client's own send lag,
//! the server's own view (its request-duration histogram), machine CPU use from /proc/stat and
//! the server's CPU from /proc/<pid>/stat over the window, and `transcoder_encodes_running`
//! sampled during it. Then p99 ratios against idle and the target (p99 ≤ 5 ms under load) as
//! PASS/MISS. Nothing is asserted; it exits non-zero only if the set-up fails. The server is
//! killed when the bench ends, panics included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const TARGET_P99_MS: f64 = 5.0;
const UPLOADS: usize = 3;
const STATUS_ROUTE: &str = "/video-status/{id}";

/// The server process; killed when dropped (also while unwinding from a panic).
struct Server {
    child: Child,
    base: String,
    _root: tempfile::TempDir,
}

impl Server {
    fn start(cores: usize) -> Self {
        let root = tempfile::Builder::new()
            .prefix("vt-status-bench-")
            .tempdir()
            .unwrap();
        let log = root.path().join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_video-transcoder"))
            .arg("serve")
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("INPUT_STORE", root.path().join("input"))
            .env("OUTPUT_STORE", root.path().join("cdn"))
            .env("SCRATCH_DIR", root.path().join("scratch"))
            .env("MAX_PARALLEL_ENCODES", cores.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn video-transcoder serve");
        let mut server = Server {
            child,
            base: String::new(),
            _root: root,
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

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The clip, generated on first use into `target/bench-data/`.
fn clip(name: &str, lavfi: &str, seconds: u32) -> PathBuf {
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

async fn upload(http: &reqwest::Client, base: &str, file: &Path) -> String {
    let form = reqwest::multipart::Form::new()
        .file("file", file)
        .await
        .unwrap();
    let response = http
        .post(format!("{base}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let code = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code.as_u16(), 202, "upload: {body}");
    body["videoId"].as_str().unwrap().to_string()
}

async fn status(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let url = format!("{base}/video-status/{id}");
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn metrics(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The value of the first sample line starting with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// `(le, cumulative count)` of the status route's request-duration histogram.
fn status_histogram(text: &str) -> Vec<(String, f64)> {
    let head = "transcoder_http_request_duration_seconds_bucket{";
    let route = format!("route=\"{STATUS_ROUTE}\"");
    text.lines()
        .filter(|l| l.starts_with(head) && l.contains(&route))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// Busy and total jiffies of the whole machine, from the first line of /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum(); // user … steal; guest is inside user
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime of a process, in jiffies.
fn process_jiffies(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum()
}

fn jiffies_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

struct Phase {
    name: &'static str,
    sent: usize,
    errors: usize,
    seconds: f64,
    /// Milliseconds from scheduled send to the end of the body, successful requests only.
    latencies: Vec<f64>,
    /// Milliseconds the client started each request after its scheduled time.
    lag: Vec<f64>,
    /// Milliseconds from the actual start to the end of the body (latency − lag), successful
    /// requests only: what a client that was never late would see (coordinated omission and all).
    from_send: Vec<f64>,
    machine_busy: f64,
    server_cores: f64,
    encodes: Vec<f64>,
    /// Requests the server itself timed at ≤ 1 ms and ≤ 5 ms, and all it counted.
    server_within: (f64, f64, f64),
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fires `rate`/s `GET /video-status/{id}` for `seconds`, open loop.
async fn measure(
    name: &'static str,
    server: &Server,
    http: &reqwest::Client,
    id: &str,
    rate: f64,
    seconds: f64,
) -> Phase {
    let base = server.base.as_str();
    let url: Arc<str> = format!("{base}/video-status/{id}").into();
    let before_metrics = metrics(http, base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (http, base, stop) = (http.clone(), base.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let text = metrics(&http, &base).await;
                seen.push(sample(&text, "transcoder_encodes_running ").unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            seen
        })
    };
    let (busy0, total0) = machine_jiffies();
    let server0 = process_jiffies(server.pid());
    let count = (rate * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let scheduled = t0 + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let lag = scheduled.elapsed().as_secs_f64() * 1e3;
            let result = async {
                let response = http.get(&*url).send().await?.error_for_status()?;
                response.bytes().await
            }
            .await;
            (result.is_ok(), scheduled.elapsed().as_secs_f64() * 1e3, lag)
        }));
    }
    let mut phase = Phase {
        name,
        sent: count,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::with_capacity(count),
        lag: Vec::with_capacity(count),
        from_send: Vec::with_capacity(count),
        machine_busy: 0.0,
        server_cores: 0.0,
        encodes: Vec::new(),
        server_within: (0.0, 0.0, 0.0),
    };
    for task in tasks {
        let (ok, latency, lag) = task.await.unwrap();
        phase.lag.push(lag);
        match ok {
            true => {
                phase.latencies.push(latency);
                phase.from_send.push(latency - lag);
            }
            false => phase.errors += 1,
        }
    }
    phase.seconds = t0.elapsed().as_secs_f64();
    let (busy1, total1) = machine_jiffies();
    let server1 = process_jiffies(server.pid());
    stop.store(true, Ordering::Relaxed);
    phase.encodes = sampler.await.unwrap();
    phase.machine_busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    phase.server_cores = (server1 - server0) as f64 / jiffies_per_second() / phase.seconds;
    let after = status_histogram(&metrics(http, base).await);
    let before = status_histogram(&before_metrics);
    let delta = |le: &str| {
        let get = |h: &[(String, f64)]| h.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
        get(&after) - get(&before)
    };
    phase.server_within = (delta("0.001"), delta("0.005"), delta("+Inf"));
    phase.latencies.sort_by(f64::total_cmp);
    phase.lag.sort_by(f64::total_cmp);
    phase.from_send.sort_by(f64::total_cmp);
    phase
}

/// Polls the job's status until `done` holds; panics after `limit`.
async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let s = status(http, base, id).await;
        if done(&s) {
            return s;
        }
        assert!(started.elapsed() < limit, "job {id}: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let seconds: f64 =
        std::env::var("BENCH_SECONDS").map_or(10.0, |s| s.parse().expect("BENCH_SECONDS"));
    let rate: f64 = std::env::var("BENCH_RATE").map_or(1000.0, |s| s.parse().expect("BENCH_RATE"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let big = clip(
        "status-1080p30-20s.mp4",
        "testsrc2=size=1920x1080:rate=30",
        20,
    );
    let small = clip("status-240p30-1s.mp4", "testsrc2=size=426x240:rate=30", 1);
    let server = Server::start(cores);
    // The client gets two threads of its own; it shares the machine with the server.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let phases = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let base = server.base.clone();
        let finished = upload(&http, &base, &small).await;
        let warm = wait_for(&http, &base, &finished, Duration::from_secs(120), |s| {
            !matches!(s["state"].as_str(), Some("queued" | "processing"))
        })
        .await;
        assert_eq!(warm["state"], "ready", "warm-up job: {warm:#}");
        // Warm the connection pool and the server, not recorded.
        measure("warm-up", &server, &http, &finished, rate, 1.0).await;
        let idle = measure(
            "idle (finished job)",
            &server,
            &http,
            &finished,
            rate,
            seconds,
        )
        .await;

        let mut ids = Vec::new();
        for _ in 0..UPLOADS {
            ids.push(upload(&http, &base, &big).await);
        }
        let running = ids[0].clone();
        wait_for(&http, &base, &running, Duration::from_secs(120), |s| {
            s["state"] == "processing"
        })
        .await;
        let started = Instant::now();
        while sample(&metrics(&http, &base).await, "transcoder_encodes_running ").unwrap_or(0.0)
            < 1.0
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no encode started"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // let the encoders spin up
        let loaded = measure("load, running job", &server, &http, &running, rate, seconds).await;
        let still = status(&http, &base, &running).await;
        let peer = measure(
            "load, finished job",
            &server,
            &http,
            &finished,
            rate,
            seconds,
        )
        .await;
        println!(
            "running job {running} was `{}` at {:.1}% after its phase",
            still["state"].as_str().unwrap_or("?"),
            still["progress"]["percent"].as_f64().unwrap_or(0.0)
        );
        [idle, loaded, peer]
    });
    drop(server);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nstatus latency benchmark: {cores} cores, {rate:.0} requests/s open loop for {seconds:.0} s per phase, \
         {UPLOADS} uploads of a 1080p30 20 s clip for load, MAX_PARALLEL_ENCODES={cores}"
    );
    println!(
        "load average now: {} (others' work on the machine adds to the numbers)",
        load.trim()
    );
    println!(
        "{:22} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "phase (ms)",
        "sent",
        "errors",
        "rate/s",
        "p50",
        "p90",
        "p99",
        "max",
        "lag p99",
        "sent p99",
        "CPU busy",
        "server",
        "encodes"
    );
    for p in &phases {
        let l = &p.latencies;
        let (lo, hi) = p
            .encodes
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &e| {
                (lo.min(e), hi.max(e))
            });
        let encodes = match p.encodes.is_empty() {
            true => "n/a".to_string(),
            false => format!("{lo:.0}–{hi:.0}"),
        };
        println!(
            "{:22} {:6} {:6} {:7.1} {:6.2} {:6.2} {:7.2} {:7.2} {:8.2} {:8.2} {:7.0}% {:6.2}c {:>7}",
            p.name,
            p.sent,
            p.errors,
            l.len() as f64 / p.seconds,
            percentile(l, 50.0),
            percentile(l, 90.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            percentile(&p.lag, 99.0),
            percentile(&p.from_send, 99.0),
            p.machine_busy * 100.0,
            p.server_cores,
            encodes,
        );
    }
    println!(
        "(p50…max: from scheduled send to end of body; lag: the client's start behind schedule; \
         sent: from the actual start, i.e. without the client's lag; CPU busy: whole machine from \
         /proc/stat; server: its CPU in cores; encodes: transcoder_encodes_running every 0.5 s)"
    );
    println!("server's own view (its request-duration histogram, same windows):");
    for p in &phases {
        let (ms1, ms5, all) = p.server_within;
        let pct = |n: f64| 100.0 * n / all.max(1.0);
        println!(
            "  {:22} {all:6.0} requests, {:5.1}% ≤ 1 ms, {:5.1}% ≤ 5 ms",
            p.name,
            pct(ms1),
            pct(ms5)
        );
    }
    let p99 = |k: usize| percentile(&phases[k].latencies, 99.0);
    println!(
        "ratio p99 load ÷ idle: running job {:.2}, finished job (same request) {:.2}",
        p99(1) / p99(0),
        p99(2) / p99(0)
    );
    let encoding = phases[1..]
        .iter()
        .all(|p| p.encodes.iter().all(|&e| e > 0.0));
    if !encoding {
        println!("warning: encodes were not running for all of the load phases");
    }
    println!("target (printed, not asserted):");
    for k in [1, 2] {
        let value = p99(k);
        let verdict = if value <= TARGET_P99_MS && phases[k].errors == 0 {
            "PASS"
        } else {
            "MISS"
        };
        println!(
            "  p99 {:20} {value:7.2} ms ≤ {TARGET_P99_MS:.2} ms {verdict}",
            phases[k].name
        );
    }
}
