//! Poster, storyboard and on-demand thumbnails, made from the published renditions: the
//! poster is a JPEG of the widest rendition that is not a black frame even when the clip opens
//! on black, the storyboard's WebVTT covers the video with tiles inside its sprite, and
//! `GET /thumbnail` answers with the picture, or 400/404/429 with a reason.

mod common;

use std::path::Path;

use common::*;

/// 3 s of black, then 5 s of testsrc2, `width` × `height`, with audio.
fn black_then_pattern(ws: &Workspace, width: u32, height: u32) -> std::path::PathBuf {
    let size = format!("size={width}x{height}:rate=30");
    let graph = format!(
        "color=black:{size}:duration=3[b];testsrc2={size}:duration=5[t];[b][t]concat=n=2:v=1:a=0"
    );
    ws.clip_with(
        "black-start.mp4",
        &graph,
        Some(8.0),
        &["-pix_fmt", "yuv420p"],
    )
}

/// (width, height, codec) of an image file, as ffprobe reads it.
fn image_size(path: &Path) -> (u64, u64, String) {
    let probe = probe(path);
    let video = stream(&probe, "video").expect("a picture");
    (
        video["width"].as_u64().unwrap(),
        video["height"].as_u64().unwrap(),
        video["codec_name"].as_str().unwrap().to_string(),
    )
}

/// Mean and standard deviation of an image's luma, decoded by the ffmpeg CLI into `scratch`.
fn luma_stats(path: &Path, scratch: &Path) -> (f64, f64) {
    let gray = scratch.join("luma.gray");
    ffmpeg(
        &[
            "-i",
            path.to_str().unwrap(),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
        ]
        .iter()
        .copied()
        .chain([gray.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    let bytes = std::fs::read(&gray).unwrap();
    let n = bytes.len() as f64;
    let mean = bytes.iter().map(|&b| f64::from(b)).sum::<f64>() / n;
    let var = bytes
        .iter()
        .map(|&b| (f64::from(b) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// `(start, end, x, y, w, h)` of every cue of a storyboard WebVTT.
fn cues(vtt: &str) -> Vec<(f64, f64, u64, u64, u64, u64)> {
    let seconds = |t: &str| {
        let parts: Vec<f64> = t.trim().split(':').map(|p| p.parse().unwrap()).collect();
        parts.iter().fold(0.0, |acc, p| acc * 60.0 + p)
    };
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let lines: Vec<&str> = vtt.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((start, end)) = line.split_once(" --> ") else {
            continue;
        };
        let target = lines[i + 1];
        let (image, rect) = target.split_once("#xywh=").expect("an #xywh= fragment");
        assert_eq!(image, "storyboard.jpg");
        let r: Vec<u64> = rect.split(',').map(|n| n.parse().unwrap()).collect();
        out.push((seconds(start), seconds(end), r[0], r[1], r[2], r[3]));
    }
    out
}

/// Checks the images a finished run published in `video_dir`, as status.json lists them.
fn check_images(ws: &Workspace, run: &Run, duration: f64, poster: (u64, u64)) {
    let (status, video_dir) = (run.status(), run.video_dir());
    let images = &status["images"];
    assert_eq!(images["poster"], "images/poster.jpg", "{status:#}");
    assert_eq!(images["storyboard"], "images/storyboard.vtt");
    assert_eq!(images["storyboardImage"], "images/storyboard.jpg");
    let file = video_dir.join("images/poster.jpg");
    assert_eq!(image_size(&file), (poster.0, poster.1, "mjpeg".into()));
    assert_eq!(
        (
            images["posterWidth"].as_u64(),
            images["posterHeight"].as_u64()
        ),
        (Some(poster.0), Some(poster.1))
    );
    let (mean, spread) = luma_stats(&file, ws.path());
    assert!(
        mean > 20.0 && spread > 20.0,
        "the poster is black or flat: mean {mean}, spread {spread}"
    );

    let (sw, sh, codec) = image_size(&video_dir.join("images/storyboard.jpg"));
    assert_eq!(codec, "mjpeg");
    let vtt = std::fs::read_to_string(video_dir.join("images/storyboard.vtt")).unwrap();
    let cues = cues(&vtt);
    assert!(cues.len() >= 100, "{} cues", cues.len());
    assert_eq!(cues[0].0, 0.0);
    for pair in cues.windows(2) {
        assert!((pair[1].0 - pair[0].1).abs() < 1e-6, "a gap: {pair:?}");
    }
    let end = cues.last().unwrap().1;
    assert!(
        (end - duration).abs() < 0.1,
        "cues end at {end}, video {duration}"
    );
    for &(start, stop, x, y, w, h) in &cues {
        assert!(stop > start && stop - start <= 10.0);
        assert!(
            w > 0 && h > 0 && x + w <= sw && y + h <= sh,
            "{x},{y},{w},{h} in {sw}×{sh}"
        );
    }
}

#[test]
fn poster_and_storyboard_are_published_and_the_poster_skips_a_black_start() {
    let ws = Workspace::new("images");
    let src = black_then_pattern(&ws, 640, 360);
    let source = Source::probe(&src);
    let run = ws.transcode(&src, "out", Some("img"), &["--ladder", "360:800,144:200"]);
    run.assert_success();
    let status = run.status();
    assert_eq!(status["state"], "ready");
    check_images(&ws, &run, source.duration, (640, 360));

    // IMAGES=none makes none.
    let run = ws.transcode(
        &src,
        "none",
        Some("img-none"),
        &["--ladder", "144:200", "--images", "none"],
    );
    run.assert_success();
    assert!(run.status().get("images").is_none(), "{:#}", run.status());
    assert!(!run.video_dir().join("images").exists());
}

/// The image at `path` (answer bytes) as ffprobe reads it: (width, height, codec).
fn answer_image(ws: &Workspace, name: &str, bytes: &[u8]) -> (u64, u64, String) {
    let path = ws.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    image_size(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_are_decoded_from_a_rendition_on_demand() {
    let ws = Workspace::new("thumbnail");
    let clip = ws.clip("clip.mp4", 640, 360, 4.0, false);
    let app = spawn_app(&[
        "--ladder",
        "360:800,144:200",
        "--thumbnail-concurrency",
        "1",
    ])
    .await;
    let id = app.api.upload_accepted(&clip).await;
    let status = app.api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    check_images_exist(&app.cdn_dir().join("videos").join(&id));

    let get = |path: String| {
        let http = app.api.http.clone();
        let url = app.api.url(&path);
        async move { http.get(url).send().await.unwrap() }
    };
    let answer = get(format!("/thumbnail/{id}.jpg?time=2&width=320")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "image/jpeg");
    let cache = answer.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cache.contains("max-age="), "{cache}");
    let bytes = answer.bytes().await.unwrap();
    assert_eq!(
        answer_image(&ws, "t.jpg", &bytes),
        (320, 180, "mjpeg".into())
    );

    let answer = get(format!("/thumbnail/{id}.png")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "image/png");
    let bytes = answer.bytes().await.unwrap();
    assert_eq!(answer_image(&ws, "t.png", &bytes), (640, 360, "png".into()));

    for (path, code) in [
        (format!("/thumbnail/{id}.jpg?time=60"), 400),
        (format!("/thumbnail/{id}.jpg?time=-1"), 400),
        (format!("/thumbnail/{id}.jpg?width=0"), 400),
        (format!("/thumbnail/{id}.jpg?width=1921"), 400),
        (format!("/thumbnail/{id}.gif"), 400),
        ("/thumbnail/no-such-video.jpg".to_string(), 404),
    ] {
        let answer = Answer::read(get(path.clone()).await).await;
        assert_eq!(answer.code, code, "{path}: {:?}", answer.body);
        assert!(answer.body["error"]["message"].is_string(), "{path}");
    }

    // One decode at a time: of many at once, the ones beyond it are refused with Retry-After.
    let many = (0..12).map(|_| get(format!("/thumbnail/{id}.png?time=1&width=1920")));
    let answers = futures_util::future::join_all(many).await;
    let codes: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert!(codes.contains(&200) && codes.contains(&429), "{codes:?}");
    assert!(codes.iter().all(|c| [200, 429].contains(c)), "{codes:?}");
    let busy = answers.iter().find(|a| a.status() == 429).unwrap();
    assert!(busy.headers().contains_key("retry-after"));
    app.stop().await;
}

fn check_images_exist(video_dir: &Path) {
    for name in ["poster.jpg", "storyboard.jpg", "storyboard.vtt"] {
        assert!(video_dir.join("images").join(name).is_file(), "{name}");
    }
}
