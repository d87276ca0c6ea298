//! The API description (`src/api/openapi.json`) against the code and the running service: it
//! is OpenAPI 3.1, names exactly the routes `src/api/mod.rs` registers with their methods, every
//! `$ref` resolves, status.json as the Rust types serialize it fits the `JobStatus` schema, and
//! the real binary serves the document and answers as it says (bodies checked against the
//! documented schemas with a small validator for the JSON Schema keywords the document uses).

#[path = "../common/mod.rs"]
mod common;

mod requests; // request bodies the document allows, and the service accepts
mod schema; // `$ref`s and the small JSON Schema validator
mod service; // the running binary against the document

use std::collections::BTreeSet;

use chrono::Utc;
use schema::{VIDEO_ID_PATTERN, assert_valid, deref, resolve, validate};
use serde_json::{Value, json};
use video_transcoder::jobs::cost::Cost;
use video_transcoder::jobs::status::{
    Download, Images, JobState, JobStatus, Progress, RenditionKind, RenditionState,
    RenditionStatus, Timestamps,
};
use video_transcoder::media::ladder::Tier;
use video_transcoder::media::source::{AudioInfo, SourceInfo, Transfer, VideoInfo};

const DOCUMENT: &str = include_str!("../../src/api/openapi.json");
const ROUTES: &str = include_str!("../../src/api/mod.rs");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("src/api/openapi.json is JSON")
}

/// `(path, method)` of every `.route("…", method(…))` in `src/api/mod.rs`.
fn registered_routes() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (i, _) in ROUTES.match_indices(".route(") {
        let rest = ROUTES[i + ".route(".len()..].trim_start();
        let rest = rest
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a route that is not a literal: {}", &rest[..40]));
        let (path, rest) = rest.split_once('"').unwrap();
        let rest = rest.trim_start().strip_prefix(',').unwrap().trim_start();
        let method: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        assert!(METHODS.contains(&method.as_str()), "{path}: `{method}`");
        routes.push((path.to_string(), method));
    }
    assert!(routes.len() >= 8, "found only {routes:?} in src/api/mod.rs");
    routes
}

/// Every `"$ref"` under `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.to_string(), r.clone())),
                    _ => refs(v, &format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn document_is_openapi_3_1_and_names_every_route() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");

    // Code → document: each registered route, with its method.
    let routes = registered_routes();
    for (path, method) in &routes {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is routed but not in openapi.json"));
        assert!(
            item[method].is_object(),
            "{method} {path} is routed but not documented"
        );
    }
    // Document → code: every documented path is routed; `/videos/…` is the nested local CDN.
    let routed: BTreeSet<&str> = routes.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        ROUTES.contains(r#".nest("/videos""#),
        "the /videos CDN moved"
    );
    for (path, item) in paths {
        if path.starts_with("/videos/") {
            continue;
        }
        assert!(
            routed.contains(path.as_str()),
            "{path} is documented, not routed"
        );
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            assert!(
                routes.contains(&(path.clone(), method.to_string())),
                "{method} {path} is documented, not routed"
            );
        }
    }
    assert!(paths.keys().any(|p| p.starts_with("/videos/")));

    // Operations: unique ids, responses, and every `{param}` of the template declared.
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            let params: Vec<Value> = shared
                .iter()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| deref(&doc, p).clone())
                .collect();
            for name in path.split('{').skip(1).filter_map(|s| s.split_once('}')) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == name.0 && p["required"] == true),
                    "{method} {path}: path parameter `{}` not declared",
                    name.0
                );
            }
        }
    }

    // Every `$ref` points inside the document, at something.
    let mut all = Vec::new();
    refs(&doc, "#", &mut all);
    assert!(all.len() > 20, "only {} $refs", all.len());
    for (at, reference) in &all {
        assert!(
            resolve(&doc, reference).is_some(),
            "{at}: $ref {reference} does not resolve"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["VideoId"]["pattern"],
        VIDEO_ID_PATTERN
    );
}

/// status.json exactly as the Rust types write it (every optional field present, then every
/// one absent) fits the `JobStatus` schema, whose objects refuse unknown members. A new field
/// in these types fails to compile here until the schema and this test learn it.
#[test]
fn job_status_schema_matches_the_rust_types() {
    let doc = document();
    let now = Utc::now();
    let rendition = RenditionStatus {
        name: "720p".into(),
        kind: RenditionKind::Video,
        tier: Tier::Standard,
        width: Some(1280),
        height: Some(720),
        target_bitrate_kbps: 2800,
        state: RenditionState::Ready,
        playlist: "720p/index.m3u8".into(),
        size_bytes: Some(1 << 20),
        bitrate_kbps: Some(2700),
        peak_bitrate_kbps: Some(3000),
        frames_done: 300,
        frames_expected: 300,
        error: Some("an error".into()),
        codecs: Some("avc1.64001f".into()),
        started: Some(now),
        finished: Some(now),
    };
    let full = JobStatus {
        video_id: "0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10".into(),
        input: Some("/data/input/pending/x_clip.mp4".into()),
        encoding: Some(
            "h264 preset veryfast, 30/1 fps, GOP 60 frames, fmp4 segments of 4 s, AAC 128 kb/s"
                .into(),
        ),
        metadata: Some(json!({"title": "Holiday"})),
        state: JobState::Partial,
        playable: true,
        error: Some("one rendition failed".into()),
        warnings: vec!["the source is damaged: 3 video packets could not be decoded".into()],
        progress: Progress {
            completed: 1,
            total: 2,
            percent: 55.5,
            eta_seconds: Some(3.5),
        },
        source: Some(SourceInfo {
            container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration_seconds: 10.0,
            size_bytes: 123_456,
            video: Some(VideoInfo {
                stream_index: 0,
                codec: "h264".into(),
                duration_seconds: 10.0,
                coded_width: 1920,
                coded_height: 1088,
                display_width: 1920,
                display_height: 1080,
                rotation: 90,
                sample_aspect_ratio: "1:1".into(),
                avg_frame_rate: 29.97,
                real_frame_rate: 29.97,
                pixel_format: "yuv420p10le".into(),
                bit_depth: 10,
                transfer: Transfer::Pq,
                interlaced: true,
                timestamp_frame_rate: 29.97,
            }),
            audio: vec![AudioInfo {
                stream_index: 1,
                codec: "aac".into(),
                channels: 2,
                sample_rate: 48_000,
            }],
        }),
        renditions: vec![
            rendition.clone(),
            RenditionStatus {
                name: "audio".into(),
                kind: RenditionKind::Audio,
                tier: Tier::Critical,
                width: None,
                height: None,
                state: RenditionState::Encoding,
                size_bytes: None,
                bitrate_kbps: None,
                peak_bitrate_kbps: None,
                error: None,
                codecs: None,
                started: None,
                finished: None,
                ..rendition
            },
        ],
        master_playlist: Some("videos/x/manifest/master.m3u8".into()),
        download: Some(Download {
            path: "videos/x/download.mp4".into(),
            rendition: "720p".into(),
            bytes: 1 << 20,
        }),
        images: Some(Images {
            poster: Some("images/poster.jpg".into()),
            poster_width: Some(1920),
            poster_height: Some(1080),
            storyboard: Some("images/storyboard.vtt".into()),
            storyboard_image: Some("images/storyboard.jpg".into()),
        }),
        timestamps: Timestamps {
            queued: now,
            started: Some(now),
            first_playable: Some(now),
            finished: Some(now),
            updated: Some(now),
        },
        cost: Some(Cost {
            cpu_seconds: 41.25,
            wall_seconds: 27.1,
            peak_memory_mib: 612.0,
            estimated_usd: 0.000776,
        }),
    };
    let schema = json!({"$ref": "#/components/schemas/JobStatus"});
    let mut audio_only = full.clone();
    audio_only.source.as_mut().unwrap().video = None;
    for status in [full, audio_only, JobStatus::queued("v")] {
        let value = serde_json::to_value(&status).unwrap();
        assert_valid(&doc, &schema, &value);
    }
    // And the validator does refuse what does not fit.
    let mut wrong = serde_json::to_value(JobStatus::queued("v")).unwrap();
    wrong["extra"] = json!(1);
    wrong["state"] = json!("done");
    wrong["timestamps"]["queued"] = json!("yesterday");
    wrong.as_object_mut().unwrap().remove("renditions");
    let mut errors = Vec::new();
    validate(&doc, &schema, &wrong, "$", &mut errors);
    assert_eq!(errors.len(), 4, "{errors:#?}");
}
