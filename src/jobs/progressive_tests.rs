//! The progressive master through the early publisher and a real local store: after every
//! published file, no master names a segment that is not published, and no BANDWIDTH is below
//! the peak of a segment it leads to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::early::{Early, Target};
use super::progressive::{Board, Growing};
use crate::media::master::{AudioVariant, VideoVariant};
use crate::media::playlist::{MediaPlaylist, Rates};
use crate::storage::{LocalStore, Store};

/// A real fMP4 init segment's `avcC` start: version 1, High profile, level 3.1.
const INIT: &[u8] = b"....ftyp....moov....avcC\x01\x64\x00\x1f\xff";

fn playlist(segments: &[(&str, f64)]) -> String {
    let mut text = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for (name, seconds) in segments {
        text.push_str(&format!("#EXTINF:{seconds:.6},\n{name}\n"));
    }
    text
}

/// Checks the published output as a player would find it now; returns how many segments the
/// published playlists name in all.
fn check_published(out: &Path) -> usize {
    let manifest = out.join("videos/v/manifest");
    let Ok(master) = std::fs::read_to_string(manifest.join("master.m3u8")) else {
        return 0;
    };
    assert!(master.contains("#EXT-X-START:TIME-OFFSET=0\n"), "{master}");
    let mut audio_uri = None;
    let mut variants = Vec::new();
    let mut bandwidth = None;
    for line in master.lines() {
        if let Some(media) = line.strip_prefix("#EXT-X-MEDIA:") {
            audio_uri = media
                .split("URI=\"")
                .nth(1)
                .map(|u| u.trim_end_matches('"').to_string());
        } else if let Some(inf) = line.strip_prefix("#EXT-X-STREAM-INF:BANDWIDTH=") {
            bandwidth = inf.split(',').next().and_then(|b| b.parse::<u64>().ok());
        } else if !line.starts_with('#') && !line.is_empty() {
            variants.push((line.to_string(), bandwidth.take().expect("BANDWIDTH")));
        }
    }
    let lowest = variants.iter().map(|v| v.1).min().expect("a variant");
    let named = audio_uri.into_iter().map(|a| (a, lowest)).chain(variants);
    let mut segments = 0;
    for (uri, bandwidth) in named {
        let path = manifest.join(&uri);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("the master names {uri}, which is not published"));
        let folder = path.parent().unwrap();
        let listed = MediaPlaylist::parse(&text, folder, &HashMap::new())
            .unwrap_or_else(|e| panic!("{uri} names a segment that is not published: {e}"));
        let peak = listed.rates().peak;
        assert!(
            peak <= bandwidth,
            "{uri} names segments peaking at {peak} b/s, the master declares {bandwidth}:\n{master}"
        );
        segments += listed.segments.len();
    }
    segments
}

#[tokio::test(start_paused = true)]
async fn no_master_names_an_unpublished_segment_or_declares_less_than_its_peak() {
    let scratch = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(out.path()).unwrap());
    let (video, audio) = (scratch.path().join("360p"), scratch.path().join("audio"));
    let mut renditions = HashMap::new();
    let rates = Rates::default();
    renditions.insert(
        video.clone(),
        Growing::Video(VideoVariant {
            uri: "360p/index.m3u8".into(),
            width: 640,
            height: 360,
            frame_rate: 30.0,
            codecs: String::new(),
            rates,
        }),
    );
    renditions.insert(
        audio.clone(),
        Growing::Audio(AudioVariant {
            uri: "audio/index.m3u8".into(),
            rates,
        }),
    );
    let board = Board::new("v", None, 1, true);
    let target = Target {
        store,
        video_id: "v".into(),
        scratch: scratch.path().to_path_buf(),
        board: Arc::new(tokio::sync::Mutex::new(board)),
        playlists: true,
        renditions,
    };
    let mut early = Early::default();
    let write = |folder: &PathBuf, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join(name), bytes).unwrap();
        folder.join(name)
    };

    // The video's first segment: no master yet, for the audio it would name is not out.
    let init = write(&video, "init.mp4", INIT);
    let seg0 = write(&video, "seg_00000.m4s", &[1; 50_000]);
    let seg1 = write(&video, "seg_00001.m4s", &[1; 500_000]);
    write(
        &video,
        "index.m3u8",
        &playlist(&[("seg_00000.m4s", 4.0), ("seg_00001.m4s", 4.0)]).into_bytes(),
    );
    for file in [&init, &seg0] {
        early.hand_over(&target, file).await;
        check_published(out.path());
    }
    assert!(!out.path().join("videos/v/manifest/master.m3u8").exists());

    // The audio's first segment, half a second later: the master names both at once.
    tokio::time::advance(Duration::from_millis(500)).await;
    let a_init = write(&audio, "init.mp4", b"....ftyp....moov");
    let a_seg0 = write(&audio, "seg_00000.m4s", &[2; 64_000]);
    write(
        &audio,
        "index.m3u8",
        &playlist(&[("seg_00000.m4s", 4.0)]).into_bytes(),
    );
    for file in [&a_init, &a_seg0] {
        early.hand_over(&target, file).await;
        check_published(out.path());
    }
    assert_eq!(
        check_published(out.path()),
        2,
        "the master lists both first segments"
    );
    let master = std::fs::read_to_string(out.path().join("videos/v/manifest/master.m3u8")).unwrap();
    assert!(
        master.contains("CODECS=\"avc1.64001F,mp4a.40.2\""),
        "{master}"
    );

    // A segment ten times heavier, over a second after the video's playlist but within a
    // second of the master: its playlist waits for a master that declares it.
    tokio::time::advance(Duration::from_millis(600)).await;
    early.hand_over(&target, &seg1).await;
    assert_eq!(
        check_published(out.path()),
        2,
        "held back until the master covers it"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    early.retry(&target).await;
    assert_eq!(check_published(out.path()), 3, "published once covered");
}
