#!/usr/bin/env bash
# Builds and ships video-transcoder to Cloud Run: a canary revision with no traffic, a smoke test
# against its tag URL, then traffic in steps, and a way back. README, "Deploy to Cloud Run".
#
#   ./deploy.sh [--dry-run] build | queue | render | deploy | promote PERCENT | rollback | monitoring
#
# --dry-run prints every command (gcloud, curl, ffmpeg) instead of running it; where the script
# needs a command's answer (a URL, a revision) it goes on with a placeholder. The files the
# printed commands name (the rendered service, the monitoring files) are kept, in the folder it
# names at the end.
# Every command is printed to stderr as `+ command` before it runs; bearer tokens never are.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<'EOF'
usage: ./deploy.sh [--dry-run] COMMAND

commands:
  build            build the image with Cloud Build and push it to Artifact Registry
  queue            create or update the Pub/Sub topics, push subscriptions and IAM bindings
                   the service's queue mode needs (before the first deploy, and after
                   changing any of them)
  render           print cloudrun.yaml with this environment's values filled in
  deploy           create a revision with no traffic, tagged `canary`, and smoke-test it
  promote PERCENT  send PERCENT (1-100, usually 10, 50, then 100) of traffic to the canary
  rollback         send all traffic back to the revision tagged `stable`, then health-check
  monitoring       create or update the alert policies and the dashboard in monitoring/

required: PROJECT_ID, REGION
optional: SERVICE (video-transcoder), REPOSITORY (video-transcoder), IMAGE_TAG (git commit),
  IMAGE, INPUT_BUCKET (PROJECT_ID-video-input), CDN_BUCKET (PROJECT_ID-video-cdn),
  PUBLIC_BASE_URL (https://storage.googleapis.com/CDN_BUCKET),
  RUNTIME_SA (video-transcoder@PROJECT_ID.iam.gserviceaccount.com),
  INVOKER_SA (video-transcoder-invoker@PROJECT_ID.iam.gserviceaccount.com),
  UPLOAD_TOKEN_SECRET (video-transcoder-upload-token), TRIGGER_AUDIENCE (the service URL),
  WEBHOOK_URL (none: webhook receivers, comma-separated),
  WEBHOOK_SECRET_SECRET (video-transcoder-webhook-secret),
  WORK_TOPIC (projects/PROJECT_ID/topics/SERVICE-work),
  WORK_TOPIC_CRITICAL (projects/PROJECT_ID/topics/SERVICE-work-critical; WORK_TOPIC's value
  for one topic), WORK_ALLOWED_EMAILS (INVOKER_SA: who may push to /work),
  REVISION_SUFFIX (IMAGE_TAG and the time), SMOKE_TIMEOUT (600 s),
  NOTIFICATION_CHANNELS (alert policy channels, comma-separated)
EOF
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

dry_run=0
# Scratch files of this run (the rendered service, the smoke clip), removed on exit.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints a command as it would be typed, with any bearer token hidden.
show() {
  local arg out="+"
  for arg in "$@"; do
    if [[ $arg == "Authorization: Bearer "* ]]; then
      arg="Authorization: Bearer <token>"
    fi
    out+=" $(printf '%q' "$arg")"
  done
  echo "$out" >&2
}

# Runs a command (in dry-run, only prints it).
run() {
  show "$@"
  if [[ $dry_run == 0 ]]; then
    "$@"
  fi
}

# Runs a command whose output the script needs; in dry-run prints it and answers $1 instead.
query() {
  local placeholder=$1
  shift
  show "$@"
  if [[ $dry_run == 1 ]]; then
    printf '%s\n' "$placeholder"
  else
    "$@"
  fi
}

# Fails naming every variable in "$@" that is unset or empty.
need() {
  local name missing=()
  for name in "$@"; do
    if [[ -z ${!name:-} ]]; then
      missing+=("$name")
    fi
  done
  if ((${#missing[@]} > 0)); then
    die "${missing[*]} not set (see ./deploy.sh --help)"
  fi
}

# Fills in the settings every command shares, after checking the required ones.
configure() {
  need PROJECT_ID REGION
  SERVICE=${SERVICE:-video-transcoder}
  REPOSITORY=${REPOSITORY:-video-transcoder}
  if [[ -z ${IMAGE_TAG:-} ]]; then
    IMAGE_TAG=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null) ||
      die "IMAGE_TAG not set and $here is not a git checkout"
  fi
  IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/video-transcoder:$IMAGE_TAG}
  INPUT_BUCKET=${INPUT_BUCKET:-$PROJECT_ID-video-input}
  CDN_BUCKET=${CDN_BUCKET:-$PROJECT_ID-video-cdn}
  PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-https://storage.googleapis.com/$CDN_BUCKET}
  RUNTIME_SA=${RUNTIME_SA:-video-transcoder@$PROJECT_ID.iam.gserviceaccount.com}
  INVOKER_SA=${INVOKER_SA:-video-transcoder-invoker@$PROJECT_ID.iam.gserviceaccount.com}
  UPLOAD_TOKEN_SECRET=${UPLOAD_TOKEN_SECRET:-video-transcoder-upload-token}
  WEBHOOK_URL=${WEBHOOK_URL:-}
  WEBHOOK_SECRET_SECRET=${WEBHOOK_SECRET_SECRET:-video-transcoder-webhook-secret}
  SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-600}
  WORK_TOPIC=${WORK_TOPIC:-projects/$PROJECT_ID/topics/$SERVICE-work}
  WORK_TOPIC_CRITICAL=${WORK_TOPIC_CRITICAL:-projects/$PROJECT_ID/topics/$SERVICE-work-critical}
  WORK_ALLOWED_EMAILS=${WORK_ALLOWED_EMAILS:-$INVOKER_SA}
  local topic
  for topic in "$WORK_TOPIC" "$WORK_TOPIC_CRITICAL"; do
    [[ $topic =~ ^projects/$PROJECT_ID/topics/[A-Za-z][A-Za-z0-9._~+%-]{2,254}$ ]] ||
      die "$topic is not a topic of this project: projects/$PROJECT_ID/topics/NAME"
  done
  # Pub/Sub pushes as the invoker; the service admits on /work only WORK_ALLOWED_EMAILS.
  [[ ",${WORK_ALLOWED_EMAILS// /}," == *",$INVOKER_SA,"* ]] ||
    die "WORK_ALLOWED_EMAILS ($WORK_ALLOWED_EMAILS) leaves out $INVOKER_SA, the account Pub/Sub pushes work as"
  # A revision name is the service name, a dash and a DNS label: lower case, digits, dashes.
  local suffix=${REVISION_SUFFIX:-$IMAGE_TAG-$(date -u +%Y%m%d-%H%M%S)}
  suffix=$(printf '%s' "$suffix" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9-' '-')
  REVISION=$SERVICE-$suffix
  ((${#REVISION} <= 63)) || die "revision name $REVISION is longer than 63 characters"
  region_flags=(--project "$PROJECT_ID" --region "$REGION")
}

# The service as JSON (`{}` when it does not exist yet).
service_json() {
  local exists
  exists=$(query "$SERVICE" gcloud run services list "${region_flags[@]}" \
    --filter "metadata.name=$SERVICE" --format 'value(metadata.name)')
  if [[ -z $exists ]]; then
    echo '{}'
    return
  fi
  query "{\"status\": {\"url\": \"https://$SERVICE-abc123-ew.a.run.app\", \"traffic\": [{\"revisionName\": \"$SERVICE-current\", \"percent\": 100, \"tag\": \"canary\"}, {\"revisionName\": \"$SERVICE-previous\", \"tag\": \"stable\"}]}}" \
    gcloud run services describe "$SERVICE" "${region_flags[@]}" --format json
}

# From the service JSON on stdin, prints one field: `url`, `serving` (the revision with 100 % of
# the traffic; empty while traffic is split) or `tag:NAME` (the revision a tag points at).
service_field() {
  python3 -c '
import json, sys
status = json.load(sys.stdin).get("status", {})
traffic = status.get("traffic", [])
field = sys.argv[1]
if field == "url":
    print(status.get("url", ""))
elif field == "serving":
    print(next((t["revisionName"] for t in traffic if t.get("percent") == 100), ""))
else:
    tag = field.removeprefix("tag:")
    print(next((t["revisionName"] for t in traffic if t.get("tag") == tag), ""))
' "$1"
}

# Writes cloudrun.yaml with every ${NAME} placeholder replaced; fails on one left over.
render_service() {
  local name text
  text=$(<"$here/cloudrun.yaml")
  for name in SERVICE REGION PROJECT_ID IMAGE REVISION RUNTIME_SA INPUT_BUCKET CDN_BUCKET \
    PUBLIC_BASE_URL TRIGGER_AUDIENCE INVOKER_SA UPLOAD_TOKEN_SECRET WEBHOOK_URL \
    WEBHOOK_SECRET_SECRET WORK_TOPIC WORK_TOPIC_CRITICAL WORK_ALLOWED_EMAILS; do
    text=${text//"\${$name}"/"${!name}"}
  done
  if [[ $text == *"\${"* ]]; then
    die "cloudrun.yaml has a placeholder deploy.sh does not fill: $(grep -o '[$]{[A-Z_]*}' <<<"$text" | head -n 1)"
  fi
  printf '%s\n' "$text"
}

# The project's number (its service agents are named by it).
project_number() {
  query 123456789012 gcloud projects describe "$PROJECT_ID" --format 'value(projectNumber)'
}

# The audience the service checks ID tokens against: its URL. Before the first deploy that URL
# is not known yet; Cloud Run's deterministic one (SERVICE-PROJECT_NUMBER.REGION.run.app) is.
default_audience() {
  local url=$1
  if [[ -n $url ]]; then
    echo "$url"
    return
  fi
  echo "https://$SERVICE-$(project_number).$REGION.run.app"
}

# The work topics, once each (WORK_TOPIC_CRITICAL may be WORK_TOPIC).
work_topics() {
  printf '%s\n' "$WORK_TOPIC"
  if [[ $WORK_TOPIC_CRITICAL != "$WORK_TOPIC" ]]; then
    printf '%s\n' "$WORK_TOPIC_CRITICAL"
  fi
}

# Prints the topic (projects/P/topics/T) if it exists; a dry run goes on with $2.
find_topic() {
  query "$2" gcloud pubsub topics list --project "$PROJECT_ID" --filter "name=$1" \
    --format 'value(name)'
}

# The Pub/Sub resources of queue mode (README, "Scaling out"). Each work topic has a push
# subscription of the same name to /work: the push holds its unit for up to the ack deadline
# (600 s, Pub/Sub's maximum); a refusal (429 when the instance is full, 503 while it drains, 500)
# comes back after Pub/Sub's backoff, 10 s doubling to 600 s; after 5 deliveries the unit goes
# to the dead-letter topic, whose subscription pushes it to /work/dead-letter, which records the
# unit's renditions as failed. Created when missing, else updated to the same settings.
cmd_queue() {
  configure
  local service url number agent dead topic existing topics=()
  service=$(service_json)
  url=$(service_field url <<<"$service")
  number=$(project_number)
  url=${url:-https://$SERVICE-$number.$REGION.run.app}
  TRIGGER_AUDIENCE=${TRIGGER_AUDIENCE:-$url}
  agent=service-$number@gcp-sa-pubsub.iam.gserviceaccount.com
  dead=projects/$PROJECT_ID/topics/$SERVICE-work-dead
  mapfile -t topics < <(work_topics)
  for topic in "${topics[@]}" "$dead"; do
    existing=$(find_topic "$topic" '')
    if [[ -n $existing ]]; then
      echo "deploy.sh: topic $topic exists" >&2
    else
      run gcloud pubsub topics create "$topic" --project "$PROJECT_ID"
    fi
  done
  push_subscription "$dead" "$url/work/dead-letter" 60
  for topic in "${topics[@]}"; do
    push_subscription "$topic" "$url/work" 600 \
      --dead-letter-topic "$dead" --max-delivery-attempts 5
  done
  # The service publishes the units.
  for topic in "${topics[@]}"; do
    run gcloud pubsub topics add-iam-policy-binding "$topic" --project "$PROJECT_ID" \
      --member "serviceAccount:$RUNTIME_SA" --role roles/pubsub.publisher
  done
  # Pub/Sub's service agent forwards dead letters (it reads the work subscriptions and
  # publishes to the dead-letter topic) and signs the pushes' ID tokens as the invoker.
  run gcloud pubsub topics add-iam-policy-binding "$dead" --project "$PROJECT_ID" \
    --member "serviceAccount:$agent" --role roles/pubsub.publisher
  for topic in "${topics[@]}"; do
    run gcloud pubsub subscriptions add-iam-policy-binding "${topic##*/}" --project "$PROJECT_ID" \
      --member "serviceAccount:$agent" --role roles/pubsub.subscriber
  done
  run gcloud iam service-accounts add-iam-policy-binding "$INVOKER_SA" \
    --member "serviceAccount:$agent" --role roles/iam.serviceAccountTokenCreator \
    --project "$PROJECT_ID" --condition None --quiet
  if [[ $service != '{}' ]]; then
    grant_invoker
  else
    echo "deploy.sh: $SERVICE does not exist yet: deploy grants $INVOKER_SA roles/run.invoker on it" >&2
  fi
  echo "deploy.sh: queue ready: units pushed to $url/work as $INVOKER_SA, audience $TRIGGER_AUDIENCE" >&2
}

# Creates or updates the push subscription named like the topic; extra arguments are added.
push_subscription() {
  local topic=$1 endpoint=$2 ack_deadline=$3 name exists settings
  shift 3
  name=${topic##*/}
  settings=(--push-endpoint "$endpoint" --push-auth-service-account "$INVOKER_SA"
    --push-auth-token-audience "$TRIGGER_AUDIENCE" --ack-deadline "$ack_deadline"
    --min-retry-delay 10s --max-retry-delay 600s --expiration-period never "$@")
  exists=$(query '' gcloud pubsub subscriptions list --project "$PROJECT_ID" \
    --filter "name=projects/$PROJECT_ID/subscriptions/$name" --format 'value(name)')
  if [[ -n $exists ]]; then
    run gcloud pubsub subscriptions update "$name" --project "$PROJECT_ID" "${settings[@]}"
  else
    run gcloud pubsub subscriptions create "$name" --project "$PROJECT_ID" --topic "$topic" \
      "${settings[@]}"
  fi
}

# The invoker (Eventarc's and the push subscriptions' identity) may call the service.
grant_invoker() {
  run gcloud run services add-iam-policy-binding "$SERVICE" "${region_flags[@]}" \
    --member "serviceAccount:$INVOKER_SA" --role roles/run.invoker --condition None --quiet
}

cmd_build() {
  configure
  # A release build of the storage client alone takes minutes on 2 cores: a bigger machine.
  run gcloud builds submit "$here" --project "$PROJECT_ID" --region "$REGION" \
    --tag "$IMAGE" --machine-type e2-highcpu-8 --timeout 3600s
}

cmd_render() {
  configure
  if [[ -z ${TRIGGER_AUDIENCE:-} ]]; then
    TRIGGER_AUDIENCE=$(default_audience "$(service_json | service_field url)")
  fi
  render_service
}

# An ID token of the invoker service account for the service's audience, with its email claim
# (the service checks both). The caller needs roles/iam.serviceAccountTokenCreator on it.
id_token() {
  query '<id-token>' gcloud auth print-identity-token --impersonate-service-account "$INVOKER_SA" \
    --audiences "$TRIGGER_AUDIENCE" --include-email
}

# /readyz and /healthz of the URL answer 200.
health_check() {
  local url=$1 token=$2 path
  for path in /readyz /healthz; do
    run curl -fsS --max-time 30 -H "Authorization: Bearer $token" "$url$path"
    echo
  done
}

# The `state` of a status.json on stdin.
job_state() {
  python3 -c 'import json, sys; print(json.load(sys.stdin).get("state", ""))'
}

# A real 2 s clip through the URL: uploaded to the input bucket, triggered, polled to `ready`.
smoke_test() {
  local url=$1 token=$2 video_id key state deadline
  video_id=smoke-${REVISION#"$SERVICE"-}
  video_id=${video_id:0:64}
  key=smoke/$video_id.mp4
  run ffmpeg -nostdin -hide_banner -loglevel error \
    -f lavfi -i testsrc2=size=640x360:rate=30:duration=2 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=2 \
    -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$work/clip.mp4"
  run gcloud storage cp "$work/clip.mp4" "gs://$INPUT_BUCKET/$key" --project "$PROJECT_ID"
  run curl -fsS --max-time 60 -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    --data "{\"videoId\": \"$video_id\", \"inputBucket\": \"$INPUT_BUCKET\", \"inputPath\": \"$key\"}" \
    "$url/transcode"
  echo
  deadline=$((SECONDS + SMOKE_TIMEOUT))
  while true; do
    state=$(query '{"state": "ready"}' curl -fsS --max-time 30 -H "Authorization: Bearer $token" \
      "$url/video-status/$video_id" | job_state)
    echo "smoke job $video_id: $state" >&2
    case $state in
      ready) break ;;
      failed | partial | interrupted) die "smoke job $video_id ended $state: see $url/video-status/$video_id" ;;
    esac
    ((SECONDS < deadline)) || die "smoke job $video_id not ready after ${SMOKE_TIMEOUT}s (last state: $state)"
    sleep 5
  done
  run gcloud storage rm --recursive "gs://$INPUT_BUCKET/$key" "gs://$CDN_BUCKET/videos/$video_id" \
    --project "$PROJECT_ID"
}

cmd_deploy() {
  configure
  if [[ $dry_run == 0 ]]; then
    local tool
    for tool in gcloud curl ffmpeg python3; do
      command -v "$tool" >/dev/null || die "$tool is not installed"
    done
  fi
  local service serving url rendered token
  service=$(service_json)
  serving=$(service_field serving <<<"$service")
  url=$(service_field url <<<"$service")
  if [[ $service != '{}' && -z $serving ]]; then
    die "traffic to $SERVICE is split (a canary is being promoted): ./deploy.sh promote 100 or ./deploy.sh rollback first"
  fi
  TRIGGER_AUDIENCE=${TRIGGER_AUDIENCE:-$(default_audience "$url")}
  # A revision publishes its units there: without them every job would fail at planning.
  local topic existing
  for topic in $(work_topics); do
    existing=$(find_topic "$topic" "$topic")
    [[ -n $existing ]] || die "topic $topic does not exist: ./deploy.sh queue first"
  done
  rendered=$work/service.yaml
  {
    render_service
    echo "  traffic:"
    if [[ -n $serving ]]; then
      # The serving revision keeps all traffic and is tagged `stable`: rollback's target.
      printf '    - revisionName: %s\n      percent: 100\n      tag: stable\n' "$serving"
      printf '    - revisionName: %s\n      percent: 0\n      tag: canary\n' "$REVISION"
    else
      echo "deploy.sh: $SERVICE does not exist yet: its first revision gets all traffic" >&2
      printf '    - revisionName: %s\n      percent: 100\n      tag: canary\n' "$REVISION"
    fi
  } >"$rendered"
  echo "deploy.sh: revision $REVISION of $IMAGE; traffic: ${serving:-none} 100 %, canary 0 %" >&2
  # POST /upload-url signs the input bucket's upload URLs with IAM signBlob as the runtime
  # account itself (no key file): that needs Token Creator on its own account. Idempotent.
  run gcloud iam service-accounts add-iam-policy-binding "$RUNTIME_SA" \
    --member "serviceAccount:$RUNTIME_SA" --role roles/iam.serviceAccountTokenCreator \
    --project "$PROJECT_ID" --condition None --quiet
  run gcloud run services replace "$rendered" "${region_flags[@]}"
  if [[ $dry_run == 1 ]]; then
    sed -n '/^  traffic:/,$p' "$rendered" >&2
  fi
  grant_invoker
  url=$(query "https://$SERVICE-abc123-ew.a.run.app" gcloud run services describe "$SERVICE" \
    "${region_flags[@]}" --format 'value(status.url)')
  local canary_url=${url/#https:\/\//https://canary---}
  token=$(id_token)
  health_check "$canary_url" "$token"
  smoke_test "$canary_url" "$token"
  echo "deploy.sh: canary $REVISION passed its smoke test at $canary_url; next: ./deploy.sh promote 10" >&2
}

cmd_promote() {
  local percent=${1:-}
  if ! [[ $percent =~ ^[0-9]{1,3}$ ]] || ((10#$percent < 1 || 10#$percent > 100)); then
    die "promote takes the canary's share of traffic, a whole percentage from 1 to 100 (usually 10, 50, 100), not '$percent'"
  fi
  configure
  run gcloud run services update-traffic "$SERVICE" "${region_flags[@]}" --to-tags "canary=$((10#$percent))"
}

cmd_rollback() {
  configure
  local service target url token
  service=$(service_json)
  target=$(service_field tag:stable <<<"$service")
  [[ -n $target ]] || die "no revision of $SERVICE is tagged stable: nothing to roll back to"
  url=$(service_field url <<<"$service")
  TRIGGER_AUDIENCE=${TRIGGER_AUDIENCE:-$url}
  run gcloud run services update-traffic "$SERVICE" "${region_flags[@]}" --to-revisions "$target=100"
  token=$(id_token)
  health_check "$url" "$token"
  echo "deploy.sh: all traffic on $target" >&2
}

# Alert policies are `gcloud alpha monitoring policies` (no GA or beta group in SDK 528); an
# update replaces the policy with the file, and its channels with NOTIFICATION_CHANNELS.
cmd_monitoring() {
  configure
  local file name existing rendered create_channels=() update_channels=()
  if [[ -n ${NOTIFICATION_CHANNELS:-} ]]; then
    create_channels=(--notification-channels "$NOTIFICATION_CHANNELS")
    update_channels=(--set-notification-channels "$NOTIFICATION_CHANNELS")
  fi
  rendered=$work/monitoring
  mkdir "$rendered"
  for file in "$here"/monitoring/*.json; do
    sed -e "s|\${SERVICE}|$SERVICE|g" -e "s|\${PROJECT_ID}|$PROJECT_ID|g" "$file" >"$rendered/${file##*/}"
  done
  # Matched by display name, so running this again updates rather than duplicates.
  for file in "$rendered"/alert-*.json; do
    name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$file")
    existing=$(query '' gcloud alpha monitoring policies list --project "$PROJECT_ID" \
      --filter "displayName=\"$name\"" --format 'value(name)')
    if [[ -n $existing ]]; then
      run gcloud alpha monitoring policies update "$existing" --project "$PROJECT_ID" \
        --policy-from-file "$file" "${update_channels[@]}"
    else
      run gcloud alpha monitoring policies create --project "$PROJECT_ID" \
        --policy-from-file "$file" "${create_channels[@]}"
    fi
  done
  file=$rendered/dashboard.json
  name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$file")
  existing=$(query '' gcloud monitoring dashboards list --project "$PROJECT_ID" \
    --filter "displayName=\"$name\"" --format 'value(name)')
  if [[ -n $existing ]]; then
    run gcloud monitoring dashboards delete "$existing" --project "$PROJECT_ID" --quiet
  fi
  run gcloud monitoring dashboards create --project "$PROJECT_ID" --config-from-file "$file"
}

main() {
  if [[ ${1:-} == --dry-run ]]; then
    dry_run=1
    trap 'rmdir "$work" 2>/dev/null || echo "deploy.sh: dry run: the files named above are kept in $work" >&2' EXIT
    shift
  fi
  local command=${1:-}
  shift || true
  case $command in
    build) cmd_build ;;
    queue) cmd_queue ;;
    render) cmd_render ;;
    deploy) cmd_deploy ;;
    promote) cmd_promote "$@" ;;
    rollback) cmd_rollback ;;
    monitoring) cmd_monitoring ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
