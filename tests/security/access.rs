//! Who may call which route. Tokens are signed by a local issuer whose keys the service fetches
//! from a JWKS on 127.0.0.1 (`--oidc-jwks-url`), exactly as it fetches Google's.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use reqwest::multipart::Form;
use serde_json::json;

use crate::common::*;
use crate::oidc::*;
use crate::support::*;

/// The upload secret the test services use.
const UPLOAD_TOKEN: &str = "upload-secret-0123456789abcdef";

fn flags(jwks: &JwksServer, extra: &[&str]) -> Vec<String> {
    let mut flags = jwks.flags();
    flags.extend(["--upload-token", UPLOAD_TOKEN].map(String::from));
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

fn refs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// A valid token with its payload swapped for other claims: the signature no longer fits.
fn tampered() -> String {
    let token = sign(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let other = claims_with(json!({"email": "intruder@example.com"}));
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// With `TRIGGER_AUDIENCE` set, `/transcode` takes only a Google-signed ID token for that
/// audience, from Google's issuer, unexpired, with a verified email on the allow-list: a
/// missing header, another scheme, garbage, the upload token, another audience or issuer, an
/// expired token or one without `exp`, a forged or tampered signature, an unknown `kid`,
/// `alg: none` and HS256 keyed with the public key are 401 with `WWW-Authenticate: Bearer`;
/// a valid token of an account not on the list, or with an unverified email or none, is 403.
/// Refused triggers start nothing. A valid token gets 202, its redelivery 200, and the keys are
/// fetched once for many checks. `/healthz` and `/readyz` stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_takes_only_valid_id_tokens_of_allowed_accounts() {
    let ws = Workspace::new("sec_transcode_auth");
    let clip = small_clip(&ws, "clip.mp4");
    let jwks = JwksServer::start().await;
    let flags = flags(&jwks, &[]);
    let app = spawn_app(&refs(&flags)).await;
    app.put_input("incoming/clip.mp4", &clip);
    app.hold_encodes();
    let api = &app.api;
    let body = |id: &str| direct_trigger(id, "incoming/clip.mp4");

    let unauthorized: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        (
            "the Basic scheme",
            Some(format!("Basic {}", sign(&claims()))),
        ),
        ("an empty bearer", Some("Bearer ".into())),
        ("not a JWT", Some(bearer("not-a-jwt"))),
        ("the upload token", Some(bearer(UPLOAD_TOKEN))),
        (
            "another audience",
            Some(bearer(&sign(&claims_with(
                json!({"aud": "https://other.example.run.app"}),
            )))),
        ),
        (
            "another issuer",
            Some(bearer(&sign(&claims_with(
                json!({"iss": "https://issuer.example.com"}),
            )))),
        ),
        (
            "an expired token",
            Some(bearer(&sign(&claims_with(
                json!({"iat": now() - 7200, "exp": now() - 3600}),
            )))),
        ),
        (
            "a token without exp",
            Some(bearer(&sign(&claims_with(json!({"exp": null}))))),
        ),
        (
            "a signature by an unpublished key",
            Some(bearer(&sign_with(&claims(), &forger_key(), KID))),
        ),
        ("a tampered payload", Some(bearer(&tampered()))),
        (
            "an unknown kid",
            Some(bearer(&sign_with(&claims(), &forger_key(), "unknown-kid"))),
        ),
        ("alg none", Some(bearer(&unsigned(&claims())))),
        (
            "HS256 keyed with the public key",
            Some(bearer(&hmac_with_public_key(&claims()))),
        ),
    ];
    for (i, (what, authorization)) in unauthorized.iter().enumerate() {
        let answer = trigger_as(api, authorization.as_deref(), &body(&format!("no-{i}"))).await;
        assert_eq!(answer.code, 401, "{what}: {:?}", answer.body);
        assert_unauthorized(&answer);
    }
    let forbidden = [
        (
            "an account not on the list",
            claims_with(json!({"email": "intruder@project.iam.gserviceaccount.com"})),
        ),
        (
            "an unverified email",
            claims_with(json!({"email_verified": false})),
        ),
        ("no email", claims_with(json!({"email": null}))),
    ];
    for (i, (what, claims)) in forbidden.iter().enumerate() {
        let answer = trigger_as(
            api,
            Some(&bearer(&sign(claims))),
            &body(&format!("nope-{i}")),
        )
        .await;
        assert_eq!(answer.code, 403, "{what}: {:?}", answer.body);
        assert_error(&answer, 403, "forbidden");
    }
    // Refused triggers started nothing (status is open by default).
    for id in ["no-0", "no-13", "nope-0"] {
        assert_error(
            &api.get(&format!("/video-status/{id}")).await,
            404,
            "not_found",
        );
    }
    assert_eq!(files_under(&app.cdn_dir()), Vec::<String>::new());

    let token = bearer(&sign(&claims()));
    let first = trigger_as(api, Some(&token), &body("allowed")).await;
    assert_eq!(first.code, 202, "{:?}", first.body);
    let fetched = jwks.fetches();
    assert!(fetched >= 1, "the keys were never fetched");
    let lower_case = format!("bearer {}", sign(&claims()));
    for authorization in [&token, &lower_case, &token] {
        let again = trigger_as(api, Some(authorization), &body("allowed")).await;
        assert_eq!(again.code, 200, "{:?}", again.body);
    }
    assert_eq!(jwks.fetches(), fetched, "cached keys were fetched again");
    for open in ["/healthz", "/readyz"] {
        assert_eq!(api.get(open).await.code, 200, "{open}");
    }
    app.stop().await;
}

/// `/upload` takes the upload token (compared whole: a prefix, a longer value or another
/// scheme is 401) or an allowed ID token (another account's is 403). A refused upload leaves
/// nothing in the input store, and a client still sending a 3 MiB body gets its 401 rather
/// than a broken connection. Status and metrics stay open by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_takes_the_upload_token_or_an_allowed_id_token() {
    let ws = Workspace::new("sec_upload_auth");
    let clip = small_clip(&ws, "clip.mp4");
    let big = ws.path().join("big.mp4");
    std::fs::write(&big, vec![0x5a; 3 << 20]).unwrap();
    let jwks = JwksServer::start().await;
    let flags = flags(&jwks, &[]);
    let app = spawn_app(&refs(&flags)).await;
    app.hold_encodes();
    let api = &app.api;
    let form = || async { Form::new().file("file", &clip).await.unwrap() };

    let prefix = &UPLOAD_TOKEN[..UPLOAD_TOKEN.len() - 1];
    let longer = format!("{UPLOAD_TOKEN}x");
    let wrong: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "a wrong token",
            Some(bearer("upload-secret-0123456789abcdeX")),
        ),
        ("a prefix of the token", Some(bearer(prefix))),
        ("the token and more", Some(bearer(&longer))),
        ("the Basic scheme", Some(format!("Basic {UPLOAD_TOKEN}"))),
        (
            "a forged ID token",
            Some(bearer(&sign_with(&claims(), &forger_key(), KID))),
        ),
    ];
    for (what, authorization) in &wrong {
        let answer = upload_as(api, authorization.as_deref(), form().await)
            .await
            .unwrap();
        assert_eq!(answer.code, 401, "{what}: {:?}", answer.body);
        assert_unauthorized(&answer);
    }
    let other = sign(&claims_with(
        json!({"email": "cms@other-project.iam.gserviceaccount.com"}),
    ));
    let answer = upload_as(api, Some(&bearer(&other)), form().await)
        .await
        .unwrap();
    assert_error(&answer, 403, "forbidden");
    for _ in 0..10 {
        let big_form = Form::new().file("file", &big).await.unwrap();
        let answer = upload_as(api, Some(&bearer("wrong-token-0123456789")), big_form)
            .await
            .expect("a refused upload still gets its answer");
        assert_unauthorized(&answer);
    }
    assert_eq!(files_under(&app.input_dir()), Vec::<String>::new());

    let mut accepted = Vec::new();
    for authorization in [bearer(UPLOAD_TOKEN), bearer(&sign(&claims()))] {
        let answer = upload_as(api, Some(&authorization), form().await)
            .await
            .unwrap();
        assert_eq!(answer.code, 202, "{:?}", answer.body);
        accepted.push(answer.body["videoId"].as_str().unwrap().to_string());
    }
    // Each upload's source and its record.
    assert_eq!(files_under(&app.input_dir()).len(), 4);
    for id in &accepted {
        assert_eq!(api.get(&format!("/video-status/{id}")).await.code, 200);
    }
    assert_eq!(api.text("/metrics").await.0, 200);
    app.stop().await;
}

/// `OPEN_STATUS=false` and `OPEN_METRICS=false` close `/video-status` (and `/thumbnail`) and `/metrics` to callers
/// without the upload token or an allowed ID token (401; another account's token 403), while
/// `/healthz`, `/readyz`, `/openapi.json` and the player page stay open; `/transcode` still
/// takes ID tokens only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_status_and_metrics_need_a_credential() {
    let jwks = JwksServer::start().await;
    let flags = flags(
        &jwks,
        &["--open-status", "false", "--open-metrics", "false"],
    );
    let app = spawn_app(&refs(&flags)).await;
    let api = &app.api;
    let status = "/video-status/0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10";
    let token = bearer(UPLOAD_TOKEN);
    let id_token = bearer(&sign(&claims()));
    let other = bearer(&sign(&claims_with(json!({"email": "x@example.com"}))));

    let thumbnail = "/thumbnail/0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10.jpg";
    for path in [status, thumbnail, "/metrics"] {
        assert_unauthorized(&get_as(api, None, path).await);
        assert_unauthorized(&get_as(api, Some(&bearer("nope-nope-nope-nope")), path).await);
        assert_error(&get_as(api, Some(&other), path).await, 403, "forbidden");
    }
    for authorization in [&token, &id_token] {
        for path in [status, thumbnail] {
            let answer = get_as(api, Some(authorization), path).await;
            assert_error(&answer, 404, "not_found");
        }
        let metrics = api
            .http
            .get(api.url("/metrics"))
            .header("authorization", authorization.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("transcoder_auth_refusals_total"), "{text}");
    }
    for open in ["/healthz", "/readyz", "/openapi.json", "/player/some-video"] {
        assert_eq!(api.text(open).await.0, 200, "{open}");
    }
    let answer = trigger_as(api, Some(&token), &direct_trigger("x", "incoming/x.mp4")).await;
    assert_unauthorized(&answer);
    app.stop().await;
}

/// The binary never shows the upload token: not in `serve --help` (the env value is hidden),
/// not when it refuses a weak token (clap would echo the value; the check says what is wrong
/// without it), not in its log while it serves and refuses requests, and neither are the
/// tokens callers sent. Settings that would lock everyone out stop it with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_log_or_the_help() {
    let ws = Workspace::new("sec_secrets");
    let jwks = JwksServer::start().await;
    let binary = env!("CARGO_BIN_EXE_video-transcoder");
    let help = Command::new(binary)
        .args(["serve", "--help"])
        .env("UPLOAD_TOKEN", UPLOAD_TOKEN)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("UPLOAD_TOKEN") && help.contains("OPEN_STATUS"),
        "{help}"
    );
    assert!(!help.contains(UPLOAD_TOKEN), "{help}");

    let refused = |env: &[(&str, &str)]| {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("INPUT_STORE", ws.path().join("input"))
            .env("OUTPUT_STORE", ws.path().join("cdn"))
            .env("SCRATCH_DIR", ws.path().join("scratch"));
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{env:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let weak = "weak secret 123456";
    let stderr = refused(&[("UPLOAD_TOKEN", weak)]);
    assert!(
        stderr.contains("UPLOAD_TOKEN must be") && !stderr.contains(weak),
        "{stderr}"
    );
    let stderr = refused(&[("OPEN_STATUS", "false")]);
    assert!(stderr.contains("OPEN_STATUS=false needs"), "{stderr}");
    let stderr = refused(&[("TRIGGER_AUDIENCE", AUDIENCE)]);
    assert!(stderr.contains("trigger-allowed-emails"), "{stderr}");

    let mut server = ServerProcess::start(
        ws.path(),
        &[
            ("UPLOAD_TOKEN", UPLOAD_TOKEN),
            ("OPEN_METRICS", "false"),
            ("TRIGGER_AUDIENCE", AUDIENCE),
            ("TRIGGER_ALLOWED_EMAILS", ALLOWED),
            ("OIDC_JWKS_URL", &jwks.url),
        ],
    );
    let api = &server.api;
    let wrong = "wrong-secret-abcdefghijklmnop";
    let forged = sign_with(&claims(), &forger_key(), KID);
    let intruder = sign(&claims_with(json!({"email": "intruder@example.com"})));
    let valid = sign(&claims());
    assert_eq!(
        get_as(api, Some(&bearer(UPLOAD_TOKEN)), "/metrics")
            .await
            .code,
        200
    );
    assert_eq!(
        get_as(api, Some(&bearer(&valid)), "/metrics").await.code,
        200
    );
    assert_eq!(
        get_as(api, Some(&bearer(wrong)), "/metrics").await.code,
        401
    );
    let body = direct_trigger("x", "incoming/x.mp4");
    assert_eq!(
        trigger_as(api, Some(&bearer(&forged)), &body).await.code,
        401
    );
    assert_eq!(
        trigger_as(api, Some(&bearer(&intruder)), &body).await.code,
        403
    );
    assert_eq!(
        trigger_as(api, Some(&bearer(UPLOAD_TOKEN)), &body)
            .await
            .code,
        401
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.terminate(), Some(0));
    let log = server.log_text();
    assert!(log.contains("access control"), "{log}");
    assert!(log.contains("upload: ID token or upload token"), "{log}");
    assert!(log.contains("refused"), "{log}");
    for secret in [UPLOAD_TOKEN, wrong, &forged, &intruder, &valid] {
        assert!(!log.contains(secret), "the log shows a token:\n{log}");
    }
    // Not even a piece of a token (its signature part).
    for token in [&forged, &intruder, &valid] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "the log shows a signature:\n{log}"
        );
    }
}

/// When the keys cannot be fetched (nothing listens at `OIDC_JWKS_URL`), a trigger with a
/// well-formed token gets 503, which Pub/Sub and Eventarc retry, rather than a 401 that blames
/// the caller; a caller without a token still gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_keys_are_503_not_401() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let emails = format!("--trigger-allowed-emails={ALLOWED}");
    let jwks = format!("--oidc-jwks-url={url}");
    let app = spawn_app(&["--trigger-audience", AUDIENCE, &emails, &jwks]).await;
    let body = direct_trigger("x", "incoming/x.mp4");
    let answer = trigger_as(&app.api, Some(&bearer(&sign(&claims()))), &body).await;
    assert_error(&answer, 503, "unavailable");
    assert_unauthorized(&trigger_as(&app.api, None, &body).await);
    app.stop().await;
}

/// Tokens naming keys the JWKS does not publish are 401 without a fetch each: 50 of them, each
/// with a new made-up `kid`, cost at most one fetch of the keys, and a valid token sent among
/// them is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_key_ids_cost_at_most_one_fetch_a_minute() {
    let jwks = JwksServer::start().await;
    let flags = flags(&jwks, &["--open-metrics", "false"]);
    let app = spawn_app(&refs(&flags)).await;
    let api = &app.api;
    let valid = bearer(&sign(&claims()));
    assert_eq!(get_as(api, Some(&valid), "/metrics").await.code, 200);
    let before = jwks.fetches();
    for i in 0..50 {
        let token = sign_with(&claims(), &forger_key(), &format!("made-up-{i}"));
        let answer = get_as(api, Some(&bearer(&token)), "/metrics").await;
        let message = assert_unauthorized(&answer);
        assert!(message.contains("not published"), "{message}");
        if i == 25 {
            assert_eq!(get_as(api, Some(&valid), "/metrics").await.code, 200);
        }
    }
    assert!(
        jwks.fetches() <= before + 1,
        "{} fetches for 50 made-up keys",
        jwks.fetches() - before
    );
    app.stop().await;
}
