//! The summary printed at the end of the run.

use crate::{ClipRun, DownloadRun, MIB, ROUNDS, Store};

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

pub fn print(runs: &[ClipRun], download: &DownloadRun, emulator_hwm: Option<u64>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nGCS benchmark: {cores} cores, 1080p30 30 s clip with audio, default ladder and \
         settings, fake-gcs-server (filesystem backend) on loopback"
    );
    println!(
        "load average now: {} (others' work on the machine adds to the numbers)",
        load.trim()
    );
    println!(
        "\n{:14} {:>9} {:>8} {:>8} | {:>8} {:>9} {:>9} | {:>9}",
        "run (s)", "playable", "ready", "master", "started", "playable", "finished", "peak RSS"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for r in runs {
        println!(
            "{:14} {:9.2} {:8.2} {:8.2} | {:>8} {:>9} {:>9} | {:5.0} MiB",
            format!("round {} {}", r.round, r.store.name()),
            r.playable,
            r.ready,
            r.master,
            opt(r.server[0]),
            opt(r.server[1]),
            opt(r.server[2]),
            r.peak_rss as f64 / MIB
        );
    }
    println!(
        "(left: seen by the client from the trigger, status polled every 100 ms; master: \
         master.m3u8 fetchable from the output store; middle: the status's own timestamps from \
         `queued`; peak RSS: the server's VmHWM)"
    );
    let of = |store: Store, round: usize| {
        runs.iter()
            .find(|r| r.store == store && r.round == round)
            .unwrap()
    };
    println!(
        "\n{:14} {:>9} {:>8} {:>8}",
        "GCS ÷ local", "playable", "ready", "master"
    );
    for round in 1..=ROUNDS {
        let (l, g) = (of(Store::Local, round), of(Store::Gcs, round));
        println!(
            "{:14} {:9.2} {:8.2} {:8.2}",
            format!("round {round}"),
            g.playable / l.playable,
            g.ready / l.ready,
            g.master / l.master
        );
    }
    let avg = |store: Store, f: fn(&ClipRun) -> f64| {
        mean(runs.iter().filter(|r| r.store == store).map(f))
    };
    let fields: [fn(&ClipRun) -> f64; 3] = [|r| r.playable, |r| r.ready, |r| r.master];
    let [p, r, m] = fields.map(|f| avg(Store::Gcs, f) / avg(Store::Local, f));
    println!("{:14} {p:9.2} {r:8.2} {m:8.2}", "mean ÷ mean");
    for store in [Store::Local, Store::Gcs] {
        let [p, r, m] = fields.map(|f| avg(store, f));
        println!(
            "{:14} {p:9.2} {r:8.2} {m:8.2}   (seconds)",
            format!("mean {}", store.name())
        );
    }

    let d = download;
    let gib_per_s =
        |seconds: Option<f64>| seconds.map_or("-".to_string(), |s| format!("{:.2}", 1.0 / s));
    println!("\n1 GiB source download from the bucket (server with MAX_VIDEO_SIZE 2 GiB)");
    println!(
        "  server RSS: before {:.0} MiB, peak sampled every 50 ms {:.0} MiB ({} samples), \
         VmHWM {:.0} MiB",
        d.rss_before as f64 / MIB,
        d.rss_peak as f64 / MIB,
        d.samples,
        d.hwm as f64 / MIB
    );
    println!(
        "  trigger → first bytes in scratch {} s, → scratch file complete (1 GiB) {} s = {} GiB/s; \
         → job `{}` {:.2} s = {:.2} GiB/s",
        opt(d.first_bytes),
        opt(d.complete),
        gib_per_s(d.complete),
        d.state,
        d.final_at,
        1.0 / d.final_at
    );
    if let (Some(first), Some(complete)) = (d.first_bytes, d.complete) {
        println!(
            "  streaming alone (first bytes → complete): {:.2} s = {:.2} GiB/s",
            complete - first,
            1.0 / (complete - first)
        );
    }
    println!("  the job's error: {}", d.error);
    println!(
        "  set-up: uploading the 1 GiB object to the emulator took {:.2} s; the emulator's own \
         VmHWM over the bench {}",
        d.upload_seconds,
        emulator_hwm.map_or("?".to_string(), |b| format!("{:.0} MiB", b as f64 / MIB))
    );
}
