//! Hostile sources through the service: files that try to make libav read other files or URLs
//! (HLS playlists, ffconcat lists, SDP, an MP4 whose track lives in another file) fail with a
//! reason, on the probe the upload or trigger makes and in the job, and nothing outside the
//! source is read. Over-size and over-long sources fail naming the limit.

use std::fs;
use std::path::Path;
use std::process::Command;

use reqwest::multipart::{Form, Part};

use crate::bait::{Bait, with_external_reference};
use crate::common::*;
use crate::support::*;

/// Uploads `bytes` as `name` and waits for the job's final status, which must be `failed` with
/// a reason; returns the reason.
async fn upload_fails(app: &TestApp, name: &str, bytes: Vec<u8>) -> String {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()));
    let answer = app.api.upload_form(form).await;
    assert_eq!(answer.code, 202, "{name}: {:?}", answer.body);
    let id = answer.body["videoId"].as_str().unwrap();
    job_fails(app, name, id).await
}

async fn job_fails(app: &TestApp, what: &str, id: &str) -> String {
    let status = app.api.wait_final(id).await;
    assert_eq!(status["state"], "failed", "{what}: {status:#}");
    assert_eq!(status["playable"], false, "{what}: {status:#}");
    let error = status["error"].as_str().unwrap_or_default().to_string();
    assert!(error.len() > 10, "{what}: no reason: {status:#}");
    error
}

/// References to the bait in every form libav knows: relative, absolute, `file:`, `subfile:`,
/// a loopback URL, and `/etc/passwd`.
fn references(bait: &Bait) -> Vec<String> {
    let media = bait.media.display().to_string();
    vec![
        "canary.ts".into(),
        media.clone(),
        format!("file:{media}"),
        format!("subfile,,start,0,end,0,,:{}", bait.text.display()),
        bait.url("segment.ts"),
        "/etc/passwd".into(),
        bait.text.display().to_string(),
    ]
}

/// HLS playlists (as `.m3u8` and disguised as `.mp4`), ffconcat lists and an SDP file naming
/// the canaries and the loopback listener are refused as formats that are not accepted, when
/// uploaded and when triggered from the input store. An MP4 whose video track's data reference
/// points at the canary next to it (proved live: ffprobe with `-enable_drefs 1` reads the
/// canary) fails without reading it. No canary is read, no connection is made, and no output
/// or scratch file holds the canary's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_name_other_files_or_urls_read_nothing_outside_the_job() {
    let ws = Workspace::new("sec_sources");
    let app = spawn_app(&[]).await;
    // Uploads land in pending/: relative references resolve to the canaries there.
    let bait = Bait::new(&app.input_dir().join("pending"));
    let outputs = [app.cdn_dir(), app.scratch_dir()];
    let outputs: Vec<&Path> = outputs.iter().map(|p| p.as_path()).collect();

    let refs = references(&bait);
    let mut playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n".to_string();
    for r in &refs {
        playlist.push_str(&format!("#EXTINF:2.0,\n{r}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let mut concat = "ffconcat version 1.0\n".to_string();
    for r in &refs {
        concat.push_str(&format!("file '{r}'\n"));
    }
    let port = bait
        .url("")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    );
    let refused = [
        ("playlist.m3u8", playlist.clone()),
        ("playlist.mp4", playlist.clone()),
        ("list.ffconcat", concat.clone()),
        ("list.mp4", concat),
        ("stream.sdp", sdp),
    ];
    for (name, text) in &refused {
        let error = upload_fails(&app, name, text.clone().into_bytes()).await;
        assert!(error.contains("not accepted"), "{name}: {error}");
        bait.assert_untouched(name, &outputs);
    }

    // The same playlist already in the input store, by trigger: the trigger's own probe and the
    // job's both refuse it.
    fs::write(app.input_dir().join("pending/evil.m3u8"), &playlist).unwrap();
    let answer = app
        .api
        .trigger(&direct_trigger("evil-trigger", "pending/evil.m3u8"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    assert_eq!(answer.body["estimatedTime"], serde_json::Value::Null);
    let error = job_fails(&app, "triggered playlist", "evil-trigger").await;
    assert!(error.contains("not accepted"), "{error}");
    bait.assert_untouched("triggered playlist", &outputs);

    // An MP4 whose track data lives in `canary.ts` next to it.
    let clip = ws.clip("clip.mp4", 320, 180, 1.0, false);
    let evil = with_external_reference(&fs::read(&clip).unwrap(), "canary.ts");
    let probe_dir = ws.subdir("probe");
    fs::write(probe_dir.join("evil.mp4"), &evil).unwrap();
    let live = Bait::new(&probe_dir);
    let probed = Command::new("ffprobe")
        .args(["-v", "error", "-enable_drefs", "1", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(probe_dir.join("evil.mp4"))
        .output()
        .unwrap();
    let packets = String::from_utf8_lossy(&probed.stdout);
    assert!(
        !live.read_since_armed().is_empty() && packets.trim().parse::<u32>().unwrap_or(0) > 0,
        "the crafted MP4 is not live bait: with enable_drefs ffprobe read {packets} packets"
    );
    let error = upload_fails(&app, "external.mp4", evil).await;
    assert!(error.contains("other files"), "{error}");
    bait.assert_untouched(
        &format!("MP4 with an external data reference ({error})"),
        &outputs,
    );
    app.stop().await;
}

/// A source over `--max-video-size` already in the input store, and one longer than
/// `--max-duration` uploaded, fail with a reason that names the size or length and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_overlong_sources_fail_naming_the_limit() {
    let ws = Workspace::new("sec_limits");
    let long = ws.clip("long.mp4", 256, 144, 3.0, false);
    let app = spawn_app(&["--max-video-size", "400000", "--max-duration", "2"]).await;

    let error = upload_fails(&app, "long.mp4", fs::read(&long).unwrap()).await;
    assert!(error.contains("long") && error.contains('2'), "{error}");

    let big = ws.path().join("big.mp4");
    fs::write(&big, vec![0u8; 500_000]).unwrap();
    app.put_input("incoming/big.mp4", &big);
    let answer = app
        .api
        .trigger(&direct_trigger("too-big", "incoming/big.mp4"), &[])
        .await;
    assert_eq!(answer.code, 202, "{:?}", answer.body);
    let error = job_fails(&app, "oversize", "too-big").await;
    assert!(
        error.contains("500000") && error.contains("400000"),
        "{error}"
    );
    app.stop().await;
}
