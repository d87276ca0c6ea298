//! A bucket that stops answering (the emulator frozen with SIGSTOP): jobs whose status writes
//! hang while the service shuts down.

use crate::*;
use std::time::{Duration, Instant};

/// Several jobs stuck on a frozen bucket when the service stops: it still exits within its
/// grace period (2 s here), writing (or trying to write) their statuses at the same time
/// rather than one second per stuck job after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_stuck_jobs_ends_within_the_grace_period() {
    const JOBS: usize = 5;
    let ws = Workspace::new("gcs_stuck_shutdown");
    let clip = std::fs::read(ws.clip("clip.mp4", 320, 240, 1.0, false)).unwrap();
    let gcs = emulator().await;
    let app = spawn_gcs_app(&gcs, &["--shutdown-grace", "2"]).await;
    app.hold_encodes();
    for i in 0..JOBS {
        let key = format!("clip-{i}.mp4");
        gcs.put(INPUT, &key, clip.clone()).await;
        let answer = app
            .api
            .trigger(&trigger(&format!("stuck-{i}"), &key), &[])
            .await;
        assert_eq!(answer.code, 202, "{:?}", answer.body);
    }
    // Planned (so downloaded and probed), all waiting for memory.
    for i in 0..JOBS {
        app.api
            .wait_for(&format!("stuck-{i}"), |s| {
                s["renditions"].as_array().is_some_and(|r| !r.is_empty())
            })
            .await;
    }

    gcs.freeze();
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    gcs.thaw();
    eprintln!("shutdown with {JOBS} stuck jobs took {took:.1?}");
    // One write after another took the grace period plus a second per job (7 s here).
    assert!(
        took < Duration::from_secs(2 + 2),
        "shutdown took {took:?}, past the 2 s grace period"
    );
}
