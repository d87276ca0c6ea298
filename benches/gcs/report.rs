//! The summary printed at the end of the run.

use crate::big::BigRun;
use crate::{ClipRun, MIB, ROUNDS, Store};

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

pub fn print(runs: &[ClipRun], bigs: &[BigRun], emulator_hwm: Option<u64>) {
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
    if !runs.is_empty() {
        print_clips(runs);
    }
    print_bigs(bigs);
    println!(
        "the emulator's own VmHWM over the bench: {}",
        emulator_hwm.map_or("?".to_string(), |b| format!("{:.0} MiB", b as f64 / MIB))
    );
}

fn print_clips(runs: &[ClipRun]) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "\n{:14} {:>9} {:>8} {:>8} | {:>8} {:>9} {:>9} | {:>9}",
        "run (s)", "playable", "ready", "master", "started", "playable", "finished", "peak RSS"
    );
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
}

fn print_bigs(bigs: &[BigRun]) {
    if bigs.is_empty() {
        return;
    }
    println!(
        "\nlarge sources read from the bucket by ranged reads (raw UYVY 1080p10 MOV, moov at the \
         end, no audio; LADDER=240:400, default chunks; a fresh server each)"
    );
    println!(
        "{:>8} {:>7} {:>9} {:>10} {:>13} {:>11} {:>10} {:>8}",
        "source",
        "frames",
        "job s",
        "RSS before",
        "RSS peak (50 ms)",
        "VmHWM",
        "emu VmHWM",
        "state"
    );
    for b in bigs {
        let emulator = b
            .emulator_hwm
            .map_or("?".into(), |v| format!("{:.0}", v as f64 / MIB));
        println!(
            "{:>4} GiB {:>7} {:9.2} {:6.0} MiB {:12.0} MiB {:7.0} MiB {:>6} MiB {:>8}",
            b.size >> 30,
            b.frames,
            b.final_at,
            b.rss_before as f64 / MIB,
            b.rss_peak as f64 / MIB,
            b.hwm as f64 / MIB,
            emulator,
            b.state
        );
        if !b.error.is_empty() {
            println!("  error: {}", b.error);
        }
        println!(
            "  (240p frames done {} of {}; {} RSS samples; making the source took {:.1} s)",
            b.frames_done.0, b.frames_done.1, b.samples, b.make_seconds
        );
    }
    if let [small, large] = bigs {
        println!(
            "VmHWM {} GiB ÷ {} GiB: {:.2}",
            large.size >> 30,
            small.size >> 30,
            large.hwm as f64 / small.hwm as f64
        );
    }
}
