//! The master playlist from the first published segments: through the real server and the
//! local store, a rendition is in the master while its own encode still runs, and the job is
//! playable from that moment, not from the end of its tier.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

/// The master as a player first finds it on the CDN, polled at file level (what a player sees):
/// it names a critical rendition whose published playlist is still growing (no ENDLIST), while
/// the higher renditions have not finished. At the end, `firstPlayable` comes before any
/// critical rendition finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_names_the_critical_rendition_from_its_first_segments() {
    let ws = Workspace::new("progressive_master");
    // 16 s at 720p in 2 s segments: the critical pass runs for seconds after its first segment.
    let clip = ws.clip("src.mp4", 1280, 720, 16.0, true);
    let app = spawn_app(&["--decode-plan", "per-tier", "--segment-seconds", "2"]).await;
    let id = app.api.upload_accepted(&clip).await;
    let manifest = app.cdn_dir().join(format!("videos/{id}/manifest"));

    let master = loop {
        if let Ok(text) = std::fs::read_to_string(manifest.join("master.m3u8")) {
            break text;
        }
        let status = app.api.status(&id).await;
        assert!(!is_final(&status), "ended with no master seen: {status:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let named: Vec<&str> = master
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!named.is_empty(), "{master}");
    let growing = named.iter().any(|uri| {
        let playlist = std::fs::read_to_string(manifest.join(uri)).unwrap();
        !playlist.contains("#EXT-X-ENDLIST")
    });
    assert!(
        growing,
        "the first master names only finished renditions:\n{master}"
    );
    assert!(master.contains("#EXT-X-START:TIME-OFFSET=0\n"), "{master}");
    let status = app.api.status(&id).await;
    assert!(
        rendition(&status, "720p")["state"] != "ready",
        "720p finished before the first master: {status:#}"
    );

    let done = app.api.wait_final(&id).await;
    assert_eq!(done["state"], "ready", "{done:#}");
    let first_playable = at(&done["timestamps"]["firstPlayable"]);
    for r in of_tier(&done, "critical") {
        assert!(
            first_playable < at(&r["finished"]),
            "playable only when {} finished: {done:#}",
            r["name"]
        );
    }
    let master = std::fs::read_to_string(manifest.join("master.m3u8")).unwrap();
    assert!(master.contains("720p/index.m3u8"), "{master}");
    app.stop().await;
}
