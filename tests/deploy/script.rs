//! deploy.sh run for real (bash, the script, an environment) in `--dry-run`: the commands each
//! subcommand prints, in order, and its refusals.

use std::process::{Command, Output};

use serde_json::Value;

use crate::fakes::fake_tools;
use crate::repo;

/// The environment every run gets unless a test removes or overrides a name.
const ENV: &[(&str, &str)] = &[
    ("PROJECT_ID", "acme-video"),
    ("REGION", "europe-west1"),
    ("IMAGE_TAG", "0123abcd"),
    ("REVISION_SUFFIX", "0123abcd-r1"),
];

/// What a run printed: the exit code, stdout, and stderr (where commands are printed).
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The run's TMPDIR: a dry run keeps the files its commands name in there.
    pub tmp: tempfile::TempDir,
}

impl Run {
    /// The printed commands (`+ …` lines), in order.
    pub fn commands(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("+ "))
            .collect()
    }

    /// The index of the first printed command containing every one of `parts`.
    fn position(&self, parts: &[&str]) -> usize {
        self.commands()
            .iter()
            .position(|c| parts.iter().all(|p| c.contains(p)))
            .unwrap_or_else(|| panic!("no command with {parts:?} in:\n{}", self.stderr))
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `bash deploy.sh args…` with only PATH, a TMPDIR of its own and `env` set (`None`
/// removes a name of ENV).
pub fn deploy_sh(args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new("bash");
    command
        .arg(repo().join("deploy.sh"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("TMPDIR", tmp.path());
    for (name, value) in ENV {
        command.env(name, value);
    }
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run bash");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
        tmp,
    }
}

pub fn dry_run(args: &[&str]) -> Run {
    let mut all = vec!["--dry-run"];
    all.extend_from_slice(args);
    deploy_sh(&all, &[])
}

#[test]
fn deploy_makes_a_canary_with_no_traffic_and_smoke_tests_its_tag_url() {
    let run = dry_run(&["deploy"]);
    run.assert_ok();
    let replace = run.position(&[
        "gcloud run services replace",
        "--project acme-video",
        "--region europe-west1",
    ]);
    // The serving revision keeps all traffic (and becomes rollback's target); the new one,
    // named by the script, gets none and the `canary` tag.
    let traffic = "  traffic:\n    - revisionName: video-transcoder-current\n      percent: 100\n      tag: stable\n    - revisionName: video-transcoder-0123abcd-r1\n      percent: 0\n      tag: canary\n";
    assert!(run.stderr.contains(traffic), "{}", run.stderr);
    let token = run.position(&[
        "gcloud auth print-identity-token",
        "--impersonate-service-account video-transcoder-invoker@acme-video.iam.gserviceaccount.com",
        "--include-email",
    ]);
    let canary = "https://canary---video-transcoder-abc123-ew.a.run.app";
    let ready = run.position(&["curl", &format!("{canary}/readyz")]);
    let clip = run.position(&["ffmpeg", "-f lavfi", "duration=2"]);
    let copy = run.position(&[
        "gcloud storage cp",
        "gs://acme-video-video-input/smoke/smoke-0123abcd-r1.mp4",
    ]);
    let trigger = run.position(&[
        "curl",
        "--data",
        "smoke/smoke-0123abcd-r1.mp4",
        &format!("{canary}/transcode"),
    ]);
    let poll = run.position(&["curl", &format!("{canary}/video-status/smoke-0123abcd-r1")]);
    // Direct uploads: the runtime account signs the bucket's upload URLs through IAM signBlob,
    // which needs Token Creator on itself.
    let runtime = "video-transcoder@acme-video.iam.gserviceaccount.com";
    let sign_blob = run.position(&[
        &format!("gcloud iam service-accounts add-iam-policy-binding {runtime}"),
        &format!("--member serviceAccount:{runtime}"),
        "--role roles/iam.serviceAccountTokenCreator",
        "--project acme-video",
    ]);
    // Queue mode: the work topics must exist before a revision publishes to them, and the
    // push account (the invoker) may call the service once it exists.
    let topics = run.position(&[
        "gcloud pubsub topics list",
        "--filter name=projects/acme-video/topics/video-transcoder-work",
    ]);
    let invoker = run.position(&[
        "gcloud run services add-iam-policy-binding video-transcoder",
        "--member serviceAccount:video-transcoder-invoker@acme-video.iam.gserviceaccount.com",
        "--role roles/run.invoker",
    ]);
    let order = [
        topics, sign_blob, replace, invoker, token, ready, clip, copy, trigger, poll,
    ];
    assert!(order.is_sorted(), "{order:?}:\n{}", run.stderr);
    assert!(run.stderr.contains("smoke job smoke-0123abcd-r1: ready"));
    // The bearer token is never printed.
    assert!(!run.stderr.contains("<id-token>"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Bearer\\ \\<token\\>"),
        "{}",
        run.stderr
    );
}

#[test]
fn promote_moves_the_given_share_of_traffic_to_the_canary() {
    for percent in ["10", "50", "100"] {
        let run = dry_run(&["promote", percent]);
        run.assert_ok();
        assert_eq!(
            run.commands(),
            [format!(
                "gcloud run services update-traffic video-transcoder --project acme-video --region europe-west1 --to-tags canary={percent}"
            )]
        );
    }
}

#[test]
fn promote_refuses_what_is_not_a_percentage() {
    for bad in ["0", "101", "ten", "50%", "-5", ""] {
        let run = dry_run(&["promote", bad]);
        assert_ne!(run.code, Some(0), "promote {bad:?}");
        assert!(
            run.stderr.contains("promote takes"),
            "{bad:?}: {}",
            run.stderr
        );
        assert!(run.commands().is_empty(), "{bad:?}: {}", run.stderr);
    }
}

#[test]
fn rollback_sends_all_traffic_to_the_stable_revision_and_checks_health() {
    let run = dry_run(&["rollback"]);
    run.assert_ok();
    let update = run.position(&[
        "gcloud run services update-traffic video-transcoder",
        "--to-revisions video-transcoder-previous=100",
    ]);
    let service = "https://video-transcoder-abc123-ew.a.run.app";
    let ready = run.position(&["curl", &format!("{service}/readyz")]);
    let healthy = run.position(&["curl", &format!("{service}/healthz")]);
    assert!(update < ready && ready < healthy, "{}", run.stderr);
}

#[test]
fn build_submits_the_repository_to_cloud_build_tagged_in_artifact_registry() {
    let run = dry_run(&["build"]);
    run.assert_ok();
    run.position(&[
        "gcloud builds submit",
        "--tag europe-west1-docker.pkg.dev/acme-video/video-transcoder/video-transcoder:0123abcd",
    ]);
}

#[test]
fn monitoring_creates_each_alert_policy_and_the_dashboard() {
    let run = dry_run(&["monitoring"]);
    run.assert_ok();
    for file in [
        "alert-encode-p95.json",
        "alert-job-failures.json",
        "alert-memory.json",
    ] {
        run.position(&[
            "gcloud alpha monitoring policies create",
            "--policy-from-file",
            file,
        ]);
    }
    run.position(&[
        "gcloud monitoring dashboards create",
        "--config-from-file",
        "dashboard.json",
    ]);
}

#[test]
fn missing_settings_are_named_before_anything_runs() {
    let run = deploy_sh(&["--dry-run", "deploy"], &[("PROJECT_ID", None)]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("PROJECT_ID not set"), "{}", run.stderr);
    assert!(run.commands().is_empty(), "{}", run.stderr);

    let run = deploy_sh(
        &["--dry-run", "promote", "10"],
        &[("PROJECT_ID", None), ("REGION", Some(""))],
    );
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("PROJECT_ID REGION not set"),
        "{}",
        run.stderr
    );

    let run = dry_run(&["launch"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("usage: ./deploy.sh"), "{}", run.stderr);
}

#[test]
fn render_fills_every_placeholder_of_the_service() {
    let run = deploy_sh(
        &["render"],
        &[(
            "TRIGGER_AUDIENCE",
            Some("https://video-transcoder-42.europe-west1.run.app"),
        )],
    );
    run.assert_ok();
    assert!(
        run.commands().is_empty(),
        "render needs no gcloud: {}",
        run.stderr
    );
    assert!(!run.stdout.contains("${"), "{}", run.stdout);
    let service: Value = serde_norway::from_str(&run.stdout).unwrap();
    assert_eq!(service["metadata"]["name"], "video-transcoder");
    let template = &service["spec"]["template"];
    assert_eq!(template["metadata"]["name"], "video-transcoder-0123abcd-r1");
    assert_eq!(
        template["spec"]["serviceAccountName"],
        "video-transcoder@acme-video.iam.gserviceaccount.com"
    );
    let transcoder = &template["spec"]["containers"][0];
    assert_eq!(
        transcoder["image"],
        "europe-west1-docker.pkg.dev/acme-video/video-transcoder/video-transcoder:0123abcd"
    );
    let env = |name: &str| {
        transcoder["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    assert_eq!(env("INPUT_STORE")["value"], "gs://acme-video-video-input");
    assert_eq!(env("OUTPUT_STORE")["value"], "gs://acme-video-video-cdn");
    assert_eq!(
        env("PUBLIC_BASE_URL")["value"],
        "https://storage.googleapis.com/acme-video-video-cdn"
    );
    assert_eq!(
        env("TRIGGER_AUDIENCE")["value"],
        "https://video-transcoder-42.europe-west1.run.app"
    );
    assert_eq!(
        env("UPLOAD_TOKEN")["valueFrom"]["secretKeyRef"]["name"],
        "video-transcoder-upload-token"
    );
    assert_eq!(
        env("WORK_TOPIC")["value"],
        "projects/acme-video/topics/video-transcoder-work"
    );
    assert_eq!(
        env("WORK_TOPIC_CRITICAL")["value"],
        "projects/acme-video/topics/video-transcoder-work-critical"
    );
    assert_eq!(
        env("WORK_ALLOWED_EMAILS")["value"],
        "video-transcoder-invoker@acme-video.iam.gserviceaccount.com",
        "the push subscriptions' account"
    );
    assert_eq!(
        env("WEBHOOK_URL")["value"],
        "",
        "no receivers unless WEBHOOK_URL is given"
    );
    assert_eq!(
        env("WEBHOOK_SECRET")["valueFrom"]["secretKeyRef"]["name"],
        "video-transcoder-webhook-secret"
    );
}

#[test]
fn the_first_deploy_of_a_new_service_gives_it_all_traffic_and_runs_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_tools(dir.path());
    let run = deploy_sh(&["deploy"], &[("PATH", Some(&path))]);
    run.assert_ok();
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    // The audience is the deterministic URL (the service has none yet); the token stays secret.
    assert!(
        calls.contains("--audiences https://video-transcoder-987654321.europe-west1.run.app"),
        "{calls}"
    );
    assert!(!run.stderr.contains("secret-id-token"), "{}", run.stderr);
    assert!(
        calls.contains("Authorization: Bearer secret-id-token"),
        "{calls}"
    );
    assert!(
        run.stderr
            .contains("does not exist yet: its first revision gets all traffic"),
        "{}",
        run.stderr
    );
    assert!(
        calls.contains("https://canary---video-transcoder-987654321.europe-west1.run.app/video-status/smoke-0123abcd-r1"),
        "{calls}"
    );
    // The top-level state decides, not a rendition's.
    assert!(
        run.stderr.contains("smoke job smoke-0123abcd-r1: ready"),
        "{}",
        run.stderr
    );
    assert!(calls.contains("gcloud storage rm --recursive"), "{calls}");
    let replaced: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.path().join("replaced.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        replaced["spec"]["traffic"],
        serde_json::json!([{"revisionName": "video-transcoder-0123abcd-r1", "percent": 100, "tag": "canary"}])
    );
}
