//! Stand-in tools for deploy.sh runs that are not dry runs: they log what they are asked and
//! answer like a small real project.

/// Stand-ins for gcloud, curl and ffmpeg that log their arguments to `calls.log` and answer
/// like a project where `video-transcoder` does not exist yet and the alert policies, the
/// dashboard and every Pub/Sub topic and subscription asked about do. gcloud also writes each call to `gcloud.calls`, quoted as deploy.sh prints
/// commands, with every file it names copied to `files/` (deploy.sh removes its own at exit).
/// Returns a PATH with them first.
pub fn fake_tools(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("calls.log");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let record = format!(
        r#"here='{}' args=()
for arg in "$@"; do
  if [[ -f $arg ]]; then cp "$arg" "$here/files/" && arg=$here/files/${{arg##*/}}; fi
  args+=("$arg")
done
{{ printf '%q ' gcloud "${{args[@]}}" && echo; }} >> "$here/gcloud.calls""#,
        dir.display()
    );
    let gcloud = format!(
        r#"{record}
case "$*" in
  *"monitoring policies list"*) echo projects/acme-video/alertPolicies/1234 ;;
  "monitoring dashboards list"*) echo projects/acme-video/dashboards/5678 ;;
  "run services list"*) ;;
  "pubsub topics list"*|"pubsub subscriptions list"*)
    for arg in "$@"; do [[ ${{previous:-}} == --filter ]] && echo "${{arg#name=}}"; previous=$arg; done ;;
  "run services replace"*) cp "$4" "$(dirname "$0")/replaced.yaml" ;;
  "projects describe"*) echo 987654321 ;;
  "run services describe"*) echo https://video-transcoder-987654321.europe-west1.run.app ;;
  "auth print-identity-token"*) echo secret-id-token ;;
esac"#
    );
    let tools = [
        ("gcloud", gcloud.as_str()),
        (
            "curl",
            r#"case "$*" in *video-status*) echo '{"state": "ready", "renditions": [{"state": "failed"}]}' ;; *) echo '{}' ;; esac"#,
        ),
        ("ffmpeg", r#"touch "${@: -1}""#),
    ];
    for (name, answer) in tools {
        let path = dir.join(name);
        let script = format!(
            "#!/usr/bin/env bash\necho \"{name} $*\" >> '{}'\n{answer}\n",
            log.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}
