//! `--rate-control`: capped CRF (the default) spends far fewer bits than ABR on easy content and
//! keeps BANDWIDTH rising with resolution; ABR still works when chosen. Both runs must satisfy
//! the whole output contract (`common::check_ready`). Bit rates are in benches/rate_control.rs.

mod common;

use common::*;

/// Bytes of every video rendition's files (init segment, media segments, playlist), including
/// any the master leaves out.
fn video_bytes(run: &Run) -> u64 {
    Hls::folders(run)
        .iter()
        .filter(|name| *name != "audio")
        .flat_map(|name| {
            let dir = run.manifest_dir().join(name);
            files_under(&dir).into_iter().map(move |f| dir.join(f))
        })
        .map(|file| std::fs::metadata(file).unwrap().len())
        .sum()
}

/// Asserts the master's variants, in BANDWIDTH order, go up in resolution as well.
fn assert_bandwidth_rises_with_resolution(hls: &Hls) {
    let listed: Vec<(u64, u32)> = hls
        .videos
        .iter()
        .map(|v| (v.variant.bandwidth(), v.width * v.height))
        .collect();
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "(BANDWIDTH, pixels) in master order: {listed:?}\n{}",
        hls.master.text
    );
}

#[test]
fn capped_crf_costs_far_less_than_abr_on_a_static_source() {
    let ws = Workspace::new("rate-control");
    // Colour bars: nothing moves, the easiest content there is.
    let src = ws.clip_with(
        "bars.mp4",
        "smptehdbars=size=1280x720:rate=30:duration=4",
        Some(4.0),
        &["-pix_fmt", "yuv420p"],
    );
    let source = Source::probe(&src);

    let abr = ws.transcode(&src, "abr", Some("abr"), &["--rate-control", "abr"]);
    let abr_hls = check_ready(&ws, &abr, &source, SegmentType::Fmp4);
    let made = |hls: &Hls| hls.status["renditions"].as_array().unwrap().len();
    assert_eq!(made(&abr_hls), 6, "144p…720p and audio");
    let crf = ws.transcode(&src, "crf", Some("crf"), &[]);
    let crf_hls = check_ready(&ws, &crf, &source, SegmentType::Fmp4);
    assert_eq!(made(&crf_hls), 6, "144p…720p and audio");
    eprintln!(
        "abr master:\n{}\ncapped-crf master:\n{}",
        abr_hls.master.text, crf_hls.master.text
    );
    let (abr_bytes, crf_bytes) = (video_bytes(&abr), video_bytes(&crf));
    eprintln!("video bytes: abr {abr_bytes}, capped-crf {crf_bytes}");
    assert!(
        crf_bytes as f64 <= 0.7 * abr_bytes as f64,
        "capped CRF {crf_bytes} B should be ≥ 30 % below ABR {abr_bytes} B"
    );
    assert_bandwidth_rises_with_resolution(&crf_hls);
    assert!(
        crf_hls.status["encoding"]
            .as_str()
            .is_some_and(|e| e.contains("capped-crf")),
        "status.encoding names the rate control: {}",
        crf_hls.status["encoding"]
    );
    assert!(
        abr_hls.status["encoding"]
            .as_str()
            .is_some_and(|e| e.contains(", abr,")),
        "status.encoding names the rate control: {}",
        abr_hls.status["encoding"]
    );
}
