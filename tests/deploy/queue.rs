//! `deploy.sh queue`: the Pub/Sub topics, push subscriptions and IAM bindings of queue mode
//! (README, "Scaling out"), in `--dry-run` and against stand-in tools that answer as a project
//! where they already exist.

use crate::fakes::fake_tools;
use crate::script::{Run, deploy_sh, dry_run};

const PROJECT: &str = "projects/acme-video";
const INVOKER: &str = "video-transcoder-invoker@acme-video.iam.gserviceaccount.com";
const RUNTIME: &str = "video-transcoder@acme-video.iam.gserviceaccount.com";

/// What a run goes on with: the service URL and the project's Pub/Sub service agent.
struct Project {
    url: &'static str,
    agent: &'static str,
}

/// A dry run: the service exists (its URL is the placeholder) and the project number is the
/// placeholder 123456789012.
const DRY_RUN: Project = Project {
    url: "https://video-transcoder-abc123-ew.a.run.app",
    agent: "service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com",
};

/// The stand-in tools: no service yet (its deterministic URL), project number 987654321.
const STAND_INS: Project = Project {
    url: "https://video-transcoder-987654321.europe-west1.run.app",
    agent: "service-987654321@gcp-sa-pubsub.iam.gserviceaccount.com",
};

/// The settings every push subscription to the service gets: OIDC tokens of the invoker for the
/// service's audience, Pub/Sub's backoff between redeliveries, and no expiry when idle.
fn push_settings(url: &str, endpoint: &str, ack_deadline: u32) -> Vec<String> {
    vec![
        format!("--push-endpoint {url}{endpoint}"),
        format!("--push-auth-service-account {INVOKER}"),
        format!("--push-auth-token-audience {url}"),
        format!("--ack-deadline {ack_deadline}"),
        "--min-retry-delay 10s".into(),
        "--max-retry-delay 600s".into(),
        "--expiration-period never".into(),
    ]
}

/// The index of the printed command with every one of `parts`, checking there is exactly one.
fn only(run: &Run, parts: &[&str]) -> usize {
    let found: Vec<usize> = run
        .commands()
        .iter()
        .enumerate()
        .filter(|(_, c)| parts.iter().all(|p| c.contains(p)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(found.len(), 1, "{parts:?} in:\n{}", run.stderr);
    found[0]
}

/// Checks the two work subscriptions and the dead-letter one, made with `verb` (`create` or
/// `update`), and returns where the dead-letter one and the first work one are.
fn assert_subscriptions(run: &Run, project: &Project, verb: &str) -> (usize, usize) {
    let mut work = Vec::new();
    for name in ["video-transcoder-work", "video-transcoder-work-critical"] {
        let mut parts = vec![
            format!("gcloud pubsub subscriptions {verb} {name} "),
            "--project acme-video".into(),
            format!("--dead-letter-topic {PROJECT}/topics/video-transcoder-work-dead"),
            "--max-delivery-attempts 5".into(),
        ];
        if verb == "create" {
            parts.push(format!("--topic {PROJECT}/topics/{name} "));
        }
        parts.extend(push_settings(project.url, "/work ", 600));
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        work.push(only(run, &parts));
    }
    let mut parts = vec![format!(
        "gcloud pubsub subscriptions {verb} video-transcoder-work-dead "
    )];
    if verb == "create" {
        parts.push(format!(
            "--topic {PROJECT}/topics/video-transcoder-work-dead"
        ));
    }
    parts.extend(push_settings(project.url, "/work/dead-letter ", 60));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let dead = only(run, &parts);
    // Dead letters of the dead-letter subscription would go nowhere: it has no policy.
    assert!(
        !run.commands()[dead].contains("--dead-letter-topic"),
        "{}",
        run.stderr
    );
    (dead, work[0].min(work[1]))
}

/// Checks every IAM binding of queue mode.
fn assert_bindings(run: &Run, project: &Project) {
    for topic in ["video-transcoder-work", "video-transcoder-work-critical"] {
        // The service publishes the units.
        only(
            run,
            &[
                &format!("gcloud pubsub topics add-iam-policy-binding {PROJECT}/topics/{topic} "),
                &format!("--member serviceAccount:{RUNTIME}"),
                "--role roles/pubsub.publisher",
            ],
        );
    }
    // Pub/Sub forwards dead letters as its own service agent: it reads the work subscriptions
    // and publishes to the dead-letter topic.
    only(
        run,
        &[
            &format!(
                "gcloud pubsub topics add-iam-policy-binding {PROJECT}/topics/video-transcoder-work-dead "
            ),
            &format!("--member serviceAccount:{}", project.agent),
            "--role roles/pubsub.publisher",
        ],
    );
    for subscription in ["video-transcoder-work", "video-transcoder-work-critical"] {
        only(
            run,
            &[
                &format!("gcloud pubsub subscriptions add-iam-policy-binding {subscription} "),
                &format!("--member serviceAccount:{}", project.agent),
                "--role roles/pubsub.subscriber",
            ],
        );
    }
    // It signs the push requests' ID tokens as the invoker.
    only(
        run,
        &[
            &format!("gcloud iam service-accounts add-iam-policy-binding {INVOKER} "),
            &format!("--member serviceAccount:{}", project.agent),
            "--role roles/iam.serviceAccountTokenCreator",
        ],
    );
}

#[test]
fn queue_creates_the_topics_subscriptions_and_bindings_of_queue_mode() {
    let run = dry_run(&["queue"]);
    run.assert_ok();
    let mut topics = Vec::new();
    for topic in [
        "video-transcoder-work",
        "video-transcoder-work-critical",
        "video-transcoder-work-dead",
    ] {
        topics.push(only(
            &run,
            &[&format!(
                "gcloud pubsub topics create {PROJECT}/topics/{topic} --project acme-video"
            )],
        ));
    }
    let (dead, work) = assert_subscriptions(&run, &DRY_RUN, "create");
    // Topics first (a subscription names its topic and its dead-letter topic), and the
    // dead-letter subscription before any dead letter can be forwarded.
    let last_topic = *topics.iter().max().unwrap();
    assert!(last_topic < dead && dead < work, "{}", run.stderr);
    assert_bindings(&run, &DRY_RUN);
    // The push account may invoke the service (which exists in a dry run).
    only(
        &run,
        &[
            "gcloud run services add-iam-policy-binding video-transcoder",
            "--region europe-west1",
            &format!("--member serviceAccount:{INVOKER}"),
            "--role roles/run.invoker",
        ],
    );
}

#[test]
fn queue_run_again_updates_what_exists_with_the_same_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_tools(dir.path());
    let run = deploy_sh(&["queue"], &[("PATH", Some(&path))]);
    run.assert_ok();
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert!(!calls.contains("topics create"), "{calls}");
    assert!(!calls.contains("subscriptions create"), "{calls}");
    assert_subscriptions(&run, &STAND_INS, "update");
    assert_bindings(&run, &STAND_INS);
    // No service yet: `deploy` grants the invoker its role once the service exists.
    assert!(
        !calls.contains("run services add-iam-policy-binding"),
        "{calls}"
    );
    assert!(run.stderr.contains("deploy grants"), "{}", run.stderr);
}

#[test]
fn queue_takes_one_topic_for_every_tier_and_refuses_a_push_account_the_service_refuses() {
    let one = format!("{PROJECT}/topics/transcode-units");
    let run = deploy_sh(
        &["--dry-run", "queue"],
        &[
            ("WORK_TOPIC", Some(&one)),
            ("WORK_TOPIC_CRITICAL", Some(&one)),
        ],
    );
    run.assert_ok();
    only(&run, &[&format!("gcloud pubsub topics create {one} ")]);
    only(
        &run,
        &["gcloud pubsub subscriptions create transcode-units "],
    );

    let run = deploy_sh(
        &["--dry-run", "queue"],
        &[(
            "WORK_ALLOWED_EMAILS",
            Some("someone@acme-video.iam.gserviceaccount.com"),
        )],
    );
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("WORK_ALLOWED_EMAILS"), "{}", run.stderr);
    assert!(run.commands().is_empty(), "{}", run.stderr);

    let run = deploy_sh(
        &["--dry-run", "queue"],
        &[("WORK_TOPIC", Some("projects/other/topics/units"))],
    );
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("projects/acme-video/topics/"),
        "{}",
        run.stderr
    );
}

#[test]
fn deploy_refuses_before_the_work_topics_exist() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = fake_tools(dir.path());
    // A gcloud in front of the stand-in that knows no topic.
    let front = dir.path().join("front");
    std::fs::create_dir(&front).unwrap();
    let gcloud = front.join("gcloud");
    std::fs::write(
        &gcloud,
        format!(
            "#!/usr/bin/env bash\ncase \"$*\" in \"pubsub topics list\"*) exit 0 ;; esac\nexec '{}' \"$@\"\n",
            dir.path().join("gcloud").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&gcloud, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{path}", front.display());
    let run = deploy_sh(&["deploy"], &[("PATH", Some(&path))]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains(
            "topic projects/acme-video/topics/video-transcoder-work does not exist: ./deploy.sh queue first"
        ),
        "{}",
        run.stderr
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap_or_default();
    assert!(!calls.contains("services replace"), "{calls}");
}
