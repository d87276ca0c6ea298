//! What the load test measured, summed up: counts, latency percentiles and the text or JSON
//! it prints.

use std::collections::HashMap;

use serde::Serialize;

/// How one job ended, as seen from the client.
#[derive(Debug, Default)]
pub(super) enum End {
    Ready,
    Partial,
    Failed(String),
    #[default]
    TimedOut,
}

/// One job's measurements; fields stay `None` when the job never got that far.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) end: End,
    pub(super) retries_429: u64,
    pub(super) upload_ms: Option<f64>,
    pub(super) first_playable_s: Option<f64>,
    pub(super) ready_s: Option<f64>,
    /// The final status's `cost`, and the source's length it paid for, in seconds.
    pub(super) cost: Option<JobCost>,
}

/// What one finished job cost, from its status.
#[derive(Clone, Copy, Debug)]
pub(super) struct JobCost {
    pub(super) usd: f64,
    pub(super) cpu_seconds: f64,
    pub(super) content_seconds: f64,
}

/// What `run` prints: counts, then latencies (`None` when no job got that far).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Summary {
    total: u32,
    pub(super) succeeded: usize,
    pub(super) partial: usize,
    failed: usize,
    timed_out: usize,
    retries_429: u64,
    /// Up to 5 distinct failure reasons, most frequent first, with their counts.
    failure_reasons: Vec<(String, usize)>,
    upload_ms: Percentiles,
    first_playable_s: Percentiles,
    ready_s: Percentiles,
    wall_s: f64,
    /// `None` when /metrics never showed `process_resident_memory_bytes`.
    peak_rss_mib: Option<f64>,
    /// Sum of the jobs' `cost.estimatedUsd` per minute of their sources; `None` when no job
    /// reported a cost.
    usd_per_content_minute: Option<f64>,
    /// Sum of the jobs' `cost.cpuSeconds` per minute of their sources.
    cpu_seconds_per_content_minute: Option<f64>,
}

/// (USD, CPU seconds) per minute of source over the jobs that reported a cost.
fn per_content_minute(outcomes: &[Outcome]) -> Option<(f64, f64)> {
    let costs: Vec<JobCost> = outcomes.iter().filter_map(|o| o.cost).collect();
    let minutes = costs.iter().map(|c| c.content_seconds).sum::<f64>() / 60.0;
    (minutes > 0.0).then(|| {
        let usd: f64 = costs.iter().map(|c| c.usd).sum();
        let cpu: f64 = costs.iter().map(|c| c.cpu_seconds).sum();
        (usd / minutes, cpu / minutes)
    })
}

#[derive(Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
}

impl Percentiles {
    fn of(outcomes: &[Outcome], field: fn(&Outcome) -> Option<f64>) -> Self {
        let values: Vec<f64> = outcomes.iter().filter_map(field).collect();
        let (p50, p95) = (percentile(&values, 50.0), percentile(&values, 95.0));
        Percentiles { p50, p95 }
    }

    fn show(&self, unit: &str) -> String {
        let one = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} {unit}"));
        format!("p50 {}, p95 {}", one(self.p50), one(self.p95))
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; `None` when there are none.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

pub(super) fn summarise(total: u32, outcomes: &[Outcome], wall_s: f64, peak_rss: u64) -> Summary {
    let count = |f: fn(&End) -> bool| outcomes.iter().filter(|o| f(&o.end)).count();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for o in outcomes {
        if let End::Failed(reason) = &o.end {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
    }
    let mut failure_reasons: Vec<_> = reasons.into_iter().collect();
    failure_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    failure_reasons.truncate(5);
    Summary {
        total,
        succeeded: count(|e| matches!(e, End::Ready)),
        partial: count(|e| matches!(e, End::Partial)),
        failed: count(|e| matches!(e, End::Failed(_))),
        timed_out: count(|e| matches!(e, End::TimedOut)),
        retries_429: outcomes.iter().map(|o| o.retries_429).sum(),
        failure_reasons,
        upload_ms: Percentiles::of(outcomes, |o| o.upload_ms),
        first_playable_s: Percentiles::of(outcomes, |o| o.first_playable_s),
        ready_s: Percentiles::of(outcomes, |o| o.ready_s),
        wall_s,
        peak_rss_mib: (peak_rss > 0).then(|| peak_rss as f64 / (1024.0 * 1024.0)),
        usd_per_content_minute: per_content_minute(outcomes).map(|(usd, _)| usd),
        cpu_seconds_per_content_minute: per_content_minute(outcomes).map(|(_, cpu)| cpu),
    }
}

pub(super) fn print_text(s: &Summary) {
    let (ok, part, failed, late) = (s.succeeded, s.partial, s.failed, s.timed_out);
    println!(
        "jobs:            {} total, {ok} ready, {part} partial, {failed} failed, {late} timed out",
        s.total
    );
    println!("429 retries:     {}", s.retries_429);
    println!("upload (202):    {}", s.upload_ms.show("ms"));
    println!("first playable:  {}", s.first_playable_s.show("s"));
    println!("ready:           {}", s.ready_s.show("s"));
    println!("wall time:       {:.1} s", s.wall_s);
    let rss = s.peak_rss_mib.map(|m| format!("{m:.1} MiB"));
    println!("server peak RSS: {}", rss.as_deref().unwrap_or("unknown"));
    match (s.usd_per_content_minute, s.cpu_seconds_per_content_minute) {
        (Some(usd), Some(cpu)) => println!(
            "cost:            ${usd:.5} per content-minute ({cpu:.1} CPU-s per content-minute)"
        ),
        _ => println!("cost:            unknown (no job reported one)"),
    }
    for (reason, n) in &s.failure_reasons {
        println!("  {n}x {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [35.0, 20.0, 50.0, 15.0, 40.0];
        assert_eq!(percentile(&v, 5.0), Some(15.0));
        assert_eq!(percentile(&v, 30.0), Some(20.0));
        assert_eq!(percentile(&v, 40.0), Some(20.0));
        assert_eq!(percentile(&v, 50.0), Some(35.0));
        assert_eq!(percentile(&v, 95.0), Some(50.0));
        assert_eq!(percentile(&v, 100.0), Some(50.0));
        assert_eq!(percentile(&v, 0.0), Some(15.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cost_is_summed_per_minute_of_source() {
        let job = |usd, cpu_seconds, content_seconds| Outcome {
            cost: Some(JobCost {
                usd,
                cpu_seconds,
                content_seconds,
            }),
            ..Outcome::default()
        };
        // 30 s and 90 s of source: 2 minutes for $0.004 and 160 CPU-s; a failed job adds none.
        let outcomes = [
            job(0.001, 40.0, 30.0),
            job(0.003, 120.0, 90.0),
            Outcome::default(),
        ];
        let (usd, cpu) = per_content_minute(&outcomes).unwrap();
        assert!((usd - 0.002).abs() < 1e-12, "{usd}");
        assert!((cpu - 80.0).abs() < 1e-9, "{cpu}");
        assert!(per_content_minute(&[Outcome::default()]).is_none());
    }
}
