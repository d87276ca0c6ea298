//! The libav libraries the service runs with: logged at start-up and reported by `/readyz`,
//! which checks them against the versions the build's headers had.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// `libavcodec     59. 37.100 / 59. 37.100` lines of `ffprobe -version`: the run-time version
/// of each library on this machine, as FFmpeg's own CLI sees it.
fn ffprobe_versions() -> Vec<(String, String)> {
    let out = Command::new("ffprobe").arg("-version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(char::is_whitespace)?;
            let name = name.strip_prefix("lib")?;
            let runtime = rest.split('/').nth(1)?.replace(' ', "");
            Some((name.to_string(), runtime.trim().to_string()))
        })
        .collect()
}

/// `/readyz` is ready with `libavVersions: ok` and lists each library's run-time and build-time
/// versions, the run-time ones equal to what `ffprobe -version` reports; the binary logs them
/// at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_libav_versions_it_runs_with() {
    let app = spawn_app(&[]).await;
    let ready = app.api.get("/readyz").await;
    assert_eq!(ready.code, 200, "{:#}", ready.body);
    assert_eq!(
        ready.body["checks"]["libavVersions"], "ok",
        "{:#}",
        ready.body
    );
    let libav = ready.body["libav"].as_object().expect("libav in /readyz");
    for name in [
        "avutil",
        "avcodec",
        "avformat",
        "avfilter",
        "swscale",
        "swresample",
    ] {
        let library = &libav[name];
        assert_eq!(library["runtime"], library["compiled"], "{name}: {library}");
    }
    let versions = ffprobe_versions();
    assert!(versions.len() >= 6, "{versions:?}");
    for (name, runtime) in &versions {
        if let Some(library) = libav.get(name) {
            assert_eq!(library["runtime"], Value::from(runtime.as_str()), "{name}");
        }
    }
    app.stop().await;

    let ws = Workspace::new("sec_versions");
    let mut server = ServerProcess::start(ws.path(), &[]);
    server.terminate();
    let log = server.log_text();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "media libraries")
        .unwrap_or_else(|| panic!("no start-up line naming the libraries:\n{log}"));
    let logged = line["libav"].as_str().unwrap_or_default();
    let avcodec = &libav["avcodec"]["runtime"];
    assert!(
        logged.contains(&format!("avcodec {}", avcodec.as_str().unwrap())),
        "{logged}"
    );
}

/// `/readyz` answers from a check made at most every 10 s: after the first call, a burst of
/// unauthenticated calls does not write the CDN bucket again (the readiness object keeps its
/// generation), so callers cannot make the service write at will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_calls_do_not_each_write_to_the_bucket() {
    let gcs = Emulator::start(&["sec-cdn"]).await;
    let endpoint = gcs.endpoint();
    let app = spawn_app(&[
        "--output-store",
        "gs://sec-cdn",
        "--gcs-endpoint",
        &endpoint,
        "--min-disk-space",
        "0",
    ])
    .await;
    let first = app.api.get("/readyz").await;
    assert_eq!(first.code, 200, "{:#}", first.body);
    let generation = || async {
        let written = gcs.metadata("sec-cdn", ".ready").await;
        written.expect("the first check wrote the bucket")["generation"].clone()
    };
    let before = generation().await;
    let burst = (0..20).map(|_| app.api.get("/readyz"));
    for answer in futures_util::future::join_all(burst).await {
        assert_eq!(answer.code, 200, "{:#}", answer.body);
    }
    assert_eq!(
        generation().await,
        before,
        "a /readyz call wrote the bucket"
    );
    app.stop().await;
}
