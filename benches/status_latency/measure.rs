//! One measured phase: `GET /video-status/{id}` fired open loop at a fixed rate, with what the
//! client, the machine (/proc) and the server (/metrics) saw meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::STATUS_ROUTE;
use crate::common::Server;

pub(crate) async fn metrics(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The value of the first sample line starting with `prefix` (name plus labels).
pub(crate) fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// `(le, cumulative count)` of the status route's request-duration histogram.
pub(crate) fn status_histogram(text: &str) -> Vec<(String, f64)> {
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
pub(crate) fn machine_jiffies() -> (u64, u64) {
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
pub(crate) fn process_jiffies(pid: u32) -> u64 {
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

pub(crate) fn jiffies_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) sent: usize,
    pub(crate) errors: usize,
    pub(crate) seconds: f64,
    /// Milliseconds from scheduled send to the end of the body, successful requests only.
    pub(crate) latencies: Vec<f64>,
    /// Milliseconds the client started each request after its scheduled time.
    pub(crate) lag: Vec<f64>,
    /// Milliseconds from the actual start to the end of the body (latency − lag), successful
    /// requests only: what a client that was never late would see (coordinated omission and all).
    pub(crate) from_send: Vec<f64>,
    pub(crate) machine_busy: f64,
    pub(crate) server_cores: f64,
    pub(crate) encodes: Vec<f64>,
    /// Requests the server itself timed at ≤ 1 ms and ≤ 5 ms, and all it counted.
    pub(crate) server_within: (f64, f64, f64),
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fires `rate`/s `GET /video-status/{id}` for `seconds`, open loop.
pub(crate) async fn measure(
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
