//! The watchdog on real work: a pass whose source stops delivering data (a named pipe the test
//! starves) and a probe whose source reads hang must end as "stalled" instead of leaving the
//! job processing; and a memory reading that reads nothing stops start-up instead of holding
//! every pass.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use common::*;
use ffmpeg_next::Rational;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use video_transcoder::config::TranscodeSettings;
use video_transcoder::jobs::scheduler::FixedMemory;
use video_transcoder::jobs::watchdog::{Limits, run_pass};
use video_transcoder::jobs::{self, Engine, JobRequest, JobState, JobStatus, Source};
use video_transcoder::media::RateControl;
use video_transcoder::media::input::Origin;
use video_transcoder::media::ladder::{Ladder, select};
use video_transcoder::media::mux::{SegmentType, Segmenting};
use video_transcoder::media::pass::{PassSpec, VideoTarget};
use video_transcoder::media::{self, source};
use video_transcoder::storage::LocalStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_stops_delivering_fails_as_stalled() {
    media::init().unwrap();
    let ws = Workspace::new("watchdog_stall");
    // MPEG-TS reads front to back, so a prefix of it decodes until the data runs out.
    let clip = ws.path().join("clip.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        clip.to_str().unwrap(),
    ]);
    let info = source::probe(
        &clip,
        source::Limits {
            max_bytes: u64::MAX,
            max_seconds: 3600,
        },
    )
    .unwrap();
    let fifo = ws.path().join("source.ts");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);

    // The writer sends the first half, then goes silent for longer than the stall limit,
    // then sends the rest so the blocked read returns and the pass can notice the stop.
    let bytes = std::fs::read(&clip).unwrap();
    let silence = Duration::from_secs(4);
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let half = bytes.len() / 2;
            pipe.write_all(&bytes[..half]).unwrap();
            std::thread::sleep(silence);
            let _ = pipe.write_all(&bytes[half..]); // the reader may be gone: fine
        }
    });

    let rendition = select(&Ladder::default(), 320, 240).remove(0);
    let frames = Arc::new(AtomicU64::new(0));
    let spec = PassSpec {
        source: Origin::File(fifo),
        info,
        video: vec![VideoTarget {
            rendition,
            dir: ws.subdir("out"),
            frames: frames.clone(),
        }],
        audio: None,
        preset: "ultrafast".into(),
        fps: Rational::new(25, 1),
        segmenting: Segmenting {
            kind: SegmentType::Fmp4,
            seconds: 4,
            part: None,
            on_segment: None,
        },
        audio_kbps: 128,
        encoder_threads: 1,
        rate_control: RateControl::CappedCrf,
        cancel: Arc::new(AtomicBool::new(false)),
        frames: None,
    };
    let limits = Limits {
        timeout: Duration::from_secs(120),
        stall: Duration::from_secs(1),
    };
    let started = Instant::now();
    let outcome = run_pass(
        spec,
        vec![frames.clone()],
        limits,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    writer.join().unwrap();
    let error = outcome.video[0]
        .as_ref()
        .expect_err("the pass must not succeed");
    assert!(
        error.to_string().contains("stalled"),
        "expected a stall, got: {error}"
    );
    assert!(
        frames.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the first half was encoded before the stall"
    );
    eprintln!("stalled pass ended after {:.1?}", started.elapsed());
}

/// Runs the binary with `args` in a mount namespace where /proc/meminfo reads as empty (as in
/// a chroot without /proc), ended by `timeout` after 20 s if it does not stop on its own.
fn run_without_meminfo(args: &[&str]) -> std::process::Output {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind /dev/null /proc/meminfo && exec timeout 20 \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_video-transcoder"))
        .args(args)
        .output()
        .expect("unshare (util-linux) runs; this test needs root")
}

/// Where the memory reading cannot be read, `transcode` and `serve` refuse to start and say
/// why, instead of waiting RENDITION_TIMEOUT on every pass and failing it "not enough memory".
#[test]
fn an_unreadable_memory_reading_stops_start_up_with_the_reason() {
    let ws = Workspace::new("watchdog_meminfo");
    let clip = ws.clip("clip.mp4", 320, 240, 1.0, false);
    let out = ws.subdir("out");
    let transcode = run_without_meminfo(&[
        "transcode",
        clip.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--rendition-timeout",
        "3",
    ]);
    let serve = run_without_meminfo(&[
        "serve",
        "--port",
        "0",
        "--input-store",
        ws.subdir("input").to_str().unwrap(),
        "--output-store",
        ws.subdir("cdn").to_str().unwrap(),
        "--scratch-dir",
        ws.subdir("scratch").to_str().unwrap(),
    ]);
    for (command, output) in [("transcode", transcode), ("serve", serve)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("/proc/meminfo") && !stderr.contains("not enough memory"),
            "{command} should name the unreadable memory reading:\n{stderr}"
        );
    }
}

/// A file whose opens block, as on a network filesystem that stopped answering: this process
/// holds a write lease on it and never acknowledges the break (the notice is SIGURG, ignored by
/// default), so the kernel holds every other open for lease-break-time (45 s by default).
/// Dropping it releases them.
struct Unanswered {
    _lease: std::fs::File,
}

impl Unanswered {
    fn hold(path: &std::path::Path) -> Self {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let fd = file.as_raw_fd();
        const F_SETSIG: libc::c_int = 10; // <fcntl.h>, Linux only; not in the libc crate
        assert_eq!(unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) }, 0);
        let leased = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(leased, 0, "lease: {}", std::io::Error::last_os_error());
        Self { _lease: file }
    }
}

/// A source whose reads hang ends its job `failed` as stalled within STALL_TIMEOUT (1 s here),
/// instead of keeping it `processing` while the probe waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_cannot_read_fails_the_job_as_stalled() {
    media::init().unwrap();
    let ws = Workspace::new("watchdog_probe_stall");
    let clip = ws.clip("clip.mp4", 320, 240, 1.0, false);
    let settings = TranscodeSettings {
        stall_timeout: 1,
        scratch_dir: ws.subdir("scratch"),
        ..TranscodeSettings::default()
    };
    let memory = Arc::new(FixedMemory(AtomicU64::new(PLENTY_OF_MEMORY)));
    let engine = Engine::new(settings, memory, 0);
    let request = JobRequest {
        video_id: "probe-stall".into(),
        source: Source::File(clip.clone()),
        output: Arc::new(LocalStore::new(ws.subdir("cdn")).unwrap()),
        metadata: None,
        probe: None,
    };
    let (updates, _watcher) = watch::channel(JobStatus::queued("probe-stall"));
    let unanswered = Unanswered::hold(&clip);
    let started = Instant::now();
    let job = jobs::run(request, &engine, CancellationToken::new(), updates);
    let status = tokio::time::timeout(Duration::from_secs(20), job)
        .await
        .expect("the job ended while its source stayed unreadable");
    eprintln!("the job ended after {:.1?}", started.elapsed());
    drop(unanswered);
    assert_eq!(status.state, JobState::Failed, "{status:#?}");
    let reason = status.error.unwrap_or_default();
    assert!(
        reason.contains("stalled") && reason.contains("STALL_TIMEOUT"),
        "{reason}"
    );
}

/// Through the service: a trigger for a local source whose reads hang is answered (its
/// estimate's probe gives up at STALL_TIMEOUT), the job fails as stalled and frees its place,
/// and the next trigger runs to ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_for_an_unreadable_source_is_answered_and_frees_its_place() {
    let ws = Workspace::new("watchdog_trigger_stall");
    let clip = ws.clip("clip.mp4", 320, 240, 1.0, false);
    let app = spawn_app(&["--stall-timeout", "1", "--max-queued-jobs", "1"]).await;
    app.put_input("hung.mp4", &clip);
    app.put_input("fine.mp4", &clip);
    let unanswered = Unanswered::hold(&app.input_dir().join("hung.mp4"));
    let trigger = |id: &str, key: &str| serde_json::json!({"videoId": id, "inputPath": key});
    let answered = tokio::time::timeout(
        Duration::from_secs(20),
        app.api.trigger(&trigger("hung", "hung.mp4"), &[]),
    )
    .await
    .expect("the trigger was answered while its source stayed unreadable");
    assert_eq!(answered.code, 202, "{:?}", answered.body);
    let waited = tokio::time::timeout(Duration::from_secs(20), app.api.wait_final("hung")).await;
    drop(unanswered);
    let status = waited.expect("the job ended while its source stayed unreadable");
    assert_eq!(status["state"], "failed", "{status:#}");
    let next = app.api.trigger(&trigger("fine", "fine.mp4"), &[]).await;
    assert_eq!(next.code, 202, "{:?}", next.body);
    assert_eq!(app.api.wait_final("fine").await["state"], "ready");
    app.stop().await;
}
