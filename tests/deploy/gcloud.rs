//! deploy.sh's gcloud commands run through the real Google Cloud CLI, offline. With an empty
//! configuration and no account, gcloud still parses every group, flag and named file (and
//! `run services replace` checks the YAML against Cloud Run's Service schema) before it asks for
//! an account; so a command that fails only for the missing account is one it accepts.
//! CI machines have gcloud (shared/FACTS.md): without it these tests fail, they do not skip.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::fakes::fake_tools;
use crate::script::{deploy_sh, dry_run};

/// What this gcloud says when a command is fine but no account is selected.
const NO_ACCOUNT: &str = "You do not currently have an active account selected";

/// How many gcloud processes run at once (each takes about a second of CPU to start).
const WORKERS: usize = 4;

/// A command gcloud was given and what it answered.
struct Verdict {
    command: String,
    code: Option<i32>,
    stderr: String,
}

impl Verdict {
    fn accepted(&self) -> bool {
        self.code != Some(0) && self.stderr.contains(NO_ACCOUNT)
    }
}

/// The directory of the real gcloud on PATH; panics if there is none.
fn gcloud_dir() -> String {
    let out = Command::new("bash")
        .args(["-c", "command -v gcloud"])
        .output()
        .expect("run bash");
    let path = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(path.trim());
    assert!(
        out.status.success() && path.is_absolute(),
        "gcloud is not on PATH: the Google Cloud SDK is on every CI machine (shared/FACTS.md); \
         these tests check deploy.sh's commands with it"
    );
    path.parent().unwrap().display().to_string()
}

/// Runs one command line (quoted as deploy.sh prints it) with the real gcloud: its own empty
/// configuration, no account, and nothing that reaches the network (usage reporting, update
/// checks, the GCE metadata probe are off).
fn judge(command: &str, gcloud_dir: &str) -> Verdict {
    let config = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .args(["-c", command])
        .env_clear()
        .env("PATH", format!("{gcloud_dir}:/usr/bin:/bin"))
        .env("HOME", config.path())
        .env("CLOUDSDK_CONFIG", config.path())
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bash");
    Verdict {
        command: command.to_string(),
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs every command with the real gcloud, a few at once, and fails listing each one it
/// refused with its answer. Prints the accepted ones.
fn assert_gcloud_accepts(commands: Vec<String>) {
    assert!(!commands.is_empty());
    let dir = gcloud_dir();
    let queue = Mutex::new(commands.into_iter());
    let verdicts = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    // Taken in a statement of its own, so the lock is not held while gcloud runs.
                    let next = queue.lock().unwrap().next();
                    let Some(command) = next else { break };
                    let verdict = judge(&command, &dir);
                    verdicts.lock().unwrap().push(verdict);
                }
            });
        }
    });
    let mut verdicts = verdicts.into_inner().unwrap();
    verdicts.sort_by(|a, b| a.command.cmp(&b.command));
    let (accepted, refused): (Vec<&Verdict>, Vec<&Verdict>) =
        verdicts.iter().partition(|v| v.accepted());
    for verdict in &accepted {
        println!("gcloud accepts: {}", verdict.command);
    }
    let report: Vec<String> = refused
        .iter()
        .map(|v| format!("{}\n  exit {:?}: {}", v.command, v.code, v.stderr.trim()))
        .collect();
    assert!(
        refused.is_empty(),
        "gcloud refused {} of {} commands (an accepted one fails only with \"{NO_ACCOUNT}\"):\n\n{}",
        refused.len(),
        verdicts.len(),
        report.join("\n\n")
    );
}

#[test]
fn every_gcloud_command_a_dry_run_prints_is_one_gcloud_accepts() {
    let mut commands = Vec::new();
    let mut runs = Vec::new();
    for args in [
        &["build"][..],
        &["render"],
        &["deploy"],
        &["promote", "10"],
        &["rollback"],
        &["queue"],
    ] {
        runs.push(dry_run(args));
    }
    let channels =
        "projects/acme-video/notificationChannels/1,projects/acme-video/notificationChannels/2";
    runs.push(deploy_sh(
        &["--dry-run", "monitoring"],
        &[("NOTIFICATION_CHANNELS", Some(channels))],
    ));
    for run in &runs {
        run.assert_ok();
        let printed: Vec<&str> = run
            .commands()
            .into_iter()
            .filter(|c| c.starts_with("gcloud "))
            .collect();
        assert!(!printed.is_empty(), "{}", run.stderr);
        commands.extend(printed.into_iter().map(str::to_string));
    }
    // The service as `render` writes it, without the traffic block `deploy` adds.
    let render = deploy_sh(
        &["render"],
        &[(
            "TRIGGER_AUDIENCE",
            Some("https://video-transcoder-42.europe-west1.run.app"),
        )],
    );
    render.assert_ok();
    let rendered = render.tmp.path().join("rendered.yaml");
    std::fs::write(&rendered, &render.stdout).unwrap();
    commands.push(format!(
        "gcloud run services replace {} --project acme-video --region europe-west1",
        rendered.display()
    ));
    commands.sort();
    commands.dedup();
    assert_gcloud_accepts(commands);
}

/// The branches a dry run does not print: a service that does not exist yet (its project
/// number), alert policies and a dashboard that do (update, delete and create again), with
/// notification channels, and Pub/Sub subscriptions that do (update).
#[test]
fn a_first_deploy_and_a_monitoring_update_run_only_commands_gcloud_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_tools(dir.path());
    deploy_sh(&["deploy"], &[("PATH", Some(&path))]).assert_ok();
    deploy_sh(&["queue"], &[("PATH", Some(&path))]).assert_ok();
    deploy_sh(
        &["monitoring"],
        &[
            ("PATH", Some(&path)),
            (
                "NOTIFICATION_CHANNELS",
                Some("projects/acme-video/notificationChannels/1"),
            ),
        ],
    )
    .assert_ok();
    let calls = std::fs::read_to_string(dir.path().join("gcloud.calls")).unwrap();
    for part in [
        "projects describe",
        "policies update projects/acme-video/alertPolicies/1234",
        "dashboards delete projects/acme-video/dashboards/5678",
        "pubsub subscriptions update video-transcoder-work ",
    ] {
        assert!(calls.contains(part), "no `{part}` in:\n{calls}");
    }
    let mut commands: Vec<String> = calls.lines().map(|l| l.trim_end().to_string()).collect();
    commands.sort();
    commands.dedup();
    assert_gcloud_accepts(commands);
}
