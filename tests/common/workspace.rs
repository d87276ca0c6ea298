//! A test's scratch workspace: clips generated with the ffmpeg CLI, and running the
//! `video-transcoder` binary on them (`Workspace`), with what one run left behind (`Run`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::files_under;
use super::hls::MasterPlaylist;

/// How long one transcode may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(480);

/// Runs `command` to the end and returns its stdout; panics with `missing` if it cannot start
/// and with its stderr if it fails.
pub fn checked_output(command: &mut Command, missing: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{missing}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the ffmpeg CLI quietly and panics with its stderr if it fails.
pub fn ffmpeg(args: &[&str]) {
    checked_output(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args(args),
        "ffmpeg CLI must be installed (apt-get install ffmpeg)",
    );
}

/// Runs the ffmpeg CLI with `args` (split on whitespace) writing `out`.
pub fn make(out: &Path, args: &str) {
    let mut all: Vec<&str> = args.split_whitespace().collect();
    all.push(out.to_str().unwrap());
    ffmpeg(&all);
}

/// A scratch workspace owned by one test: clips, the binary's output and its TMPDIR live here.
/// Set `VT_KEEP_TEST_DIRS=1` to keep it for a post-mortem.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(test: &str) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("vt-{test}-"))
            .tempdir()
            .expect("temp dir");
        if std::env::var_os("VT_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh empty directory inside the workspace.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// An H.264 (+ AAC 44.1 kHz stereo when `audio`) mp4 of `testsrc2` at 30 fps. `testsrc2`
    /// rounds odd sizes down to even: use [`Workspace::clip_with`] and `testsrc` for odd sizes.
    pub fn clip(&self, name: &str, width: u32, height: u32, seconds: f64, audio: bool) -> PathBuf {
        let video = format!("testsrc2=size={width}x{height}:rate=30:duration={seconds}");
        self.clip_with(
            name,
            &video,
            audio.then_some(seconds),
            &["-pix_fmt", "yuv420p"],
        )
    }

    /// An mp4 from a lavfi video graph, optional sine audio of `audio_seconds`, and extra
    /// output arguments (pixel format, metadata…).
    pub fn clip_with(
        &self,
        name: &str,
        lavfi_video: &str,
        audio_seconds: Option<f64>,
        extra: &[&str],
    ) -> PathBuf {
        let out = self.path().join(name);
        let sine =
            audio_seconds.map(|s| format!("sine=frequency=440:sample_rate=44100:duration={s}"));
        let mut args = vec!["-f", "lavfi", "-i", lavfi_video];
        if let Some(sine) = &sine {
            args.extend([
                "-f",
                "lavfi",
                "-i",
                sine.as_str(),
                "-c:a",
                "aac",
                "-ac",
                "2",
                "-b:a",
                "96k",
            ]);
        }
        args.extend(["-c:v", "libx264", "-preset", "ultrafast"]);
        args.extend(extra);
        args.push(out.to_str().unwrap());
        ffmpeg(&args);
        out
    }

    /// Runs `video-transcoder transcode <input> --out <ws>/<out_name> [--id id] extra…` with
    /// TMPDIR pointed at an empty directory of its own, so leftover scratch files can be seen.
    pub fn transcode(&self, input: &Path, out_name: &str, id: Option<&str>, extra: &[&str]) -> Run {
        let out_dir = self.subdir(out_name);
        let tmp_dir = self.subdir(&format!("{out_name}.tmp"));
        let stdout_path = self.path().join(format!("{out_name}.stdout"));
        let stderr_path = self.path().join(format!("{out_name}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_video-transcoder"));
        cmd.arg("transcode").arg(input).arg("--out").arg(&out_dir);
        if let Some(id) = id {
            cmd.args(["--id", id]);
        }
        cmd.args(extra)
            .env("TMPDIR", &tmp_dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn video-transcoder");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("video-transcoder {cmd:?} still running after {RUN_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            code: status.code(),
            stdout: fs::read_to_string(&stdout_path).unwrap(),
            stderr: fs::read_to_string(&stderr_path).unwrap(),
            out_dir,
            tmp_dir,
            id: id.map(str::to_owned),
            elapsed: started.elapsed(),
        };
        eprintln!(
            "transcode {} took {:.1?} (exit {:?})",
            input.display(),
            run.elapsed,
            run.code
        );
        run
    }
}

/// One finished run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub out_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub id: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "video-transcoder failed; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// The id given with `--id`, or the only directory under `<out>/videos/`.
    pub fn video_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        let ids: Vec<String> = fs::read_dir(self.out_dir.join("videos"))
            .expect("<out>/videos exists")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "expected one video under {}/videos: {ids:?}",
            self.out_dir.display()
        );
        ids[0].clone()
    }

    /// The job removed its scratch: nothing at all (not even an empty dir) left in its TMPDIR.
    pub fn assert_tmpdir_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.tmp_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "scratch left in TMPDIR: {left:?} (files: {:?})",
            files_under(&self.tmp_dir)
        );
    }

    pub fn video_dir(&self) -> PathBuf {
        self.out_dir.join("videos").join(self.video_id())
    }

    pub fn manifest_dir(&self) -> PathBuf {
        self.video_dir().join("manifest")
    }

    pub fn status(&self) -> Value {
        let path = self.video_dir().join("status.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status.json is not JSON ({e}): {text}"))
    }

    pub fn master(&self) -> MasterPlaylist {
        MasterPlaylist::read(&self.manifest_dir().join("master.m3u8"))
    }
}
