//! Direct uploads into the input bucket: `POST /upload-url` answers with a V4 signed URL made by
//! `google-cloud-storage`'s `SignedUrlBuilder` with a service account key's signer (a key made
//! for the test; fake-gcs-server does not check signatures, Cloud Storage does), the client PUTs
//! the clip there, and the bucket's finalize event on `/transcode` starts the job.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;
use crate::*;

const FINALIZED: &str = "google.cloud.storage.object.v1.finalized";
const SIGNER: &str = "uploader@test-project.iam.gserviceaccount.com";

/// A service account key file with a new RSA key (PKCS#8 PEM, as Google issues them).
fn service_account_key(dir: &Path) -> std::path::PathBuf {
    let pem = dir.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{made:?}");
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": SIGNER,
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("credentials.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

async fn put_signed(http: &reqwest::Client, answer: &Value, bytes: Vec<u8>) -> (u16, String) {
    assert_eq!(answer["method"], "PUT", "{answer:#}");
    let mut request = http.put(answer["uploadUrl"].as_str().unwrap()).body(bytes);
    for (name, value) in answer["headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// URL → PUT → finalize event → ready, with the uploader's metadata in status.json; the
/// signed URL points at the emulator, names the signing account and signs the Content-Type and
/// the size range (Cloud Storage refuses a PUT larger than declared; fake-gcs-server checks
/// neither signatures nor that header, so that refusal is not tested here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_upload_to_the_bucket_starts_its_job_from_the_finalize_event() {
    let ws = Workspace::new("gcs_direct_upload");
    let clip = std::fs::read(ws.clip("clip.mp4", 256, 144, 1.0, true)).unwrap();
    let credentials = service_account_key(ws.path());
    let gcs = emulator().await;
    let mut env = gcs_env(&gcs);
    env.push((
        "GOOGLE_APPLICATION_CREDENTIALS",
        credentials.display().to_string(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(ws.path(), &env);
    let api = &server.api;

    let request = json!({
        "fileName": "beach day.mp4",
        "contentType": "video/mp4",
        "sizeBytes": clip.len(),
        "metadata": {"title": "Beach"},
    });
    let answer = api
        .http
        .post(api.url("/upload-url"))
        .json(&request)
        .send()
        .await
        .unwrap();
    let answer = Answer::read(answer).await;
    assert_eq!(answer.code, 201, "{:?}\n{}", answer.body, server.log_text());
    let id = answer.body["videoId"].as_str().unwrap().to_string();
    let name = format!("pending/{id}_beach_day.mp4");
    let url = reqwest::Url::parse(answer.body["uploadUrl"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        gcs.public_url(INPUT, &name)
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["X-Goog-Algorithm"], "GOOG4-RSA-SHA256");
    assert!(query["X-Goog-Credential"].starts_with(SIGNER), "{query:?}");
    assert_eq!(query["X-Goog-Expires"], "3600");
    assert_eq!(
        query["X-Goog-SignedHeaders"],
        "content-type;host;x-goog-content-length-range"
    );
    assert_eq!(
        query["X-Goog-Signature"].len(),
        512,
        "an RSA-2048 signature"
    );

    let (code, text) = put_signed(&api.http, &answer.body, clip.clone()).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(gcs.get(INPUT, &name).await.unwrap(), clip);

    // The bucket announces both objects; the record starts nothing, the upload starts the job.
    for key in [format!("pending/{id}.json"), name.clone()] {
        let generation = gcs.metadata(INPUT, &key).await.unwrap()["generation"].clone();
        let object = gcs_object(INPUT, &key, generation.as_str().unwrap());
        let event = cloud_event(api, FINALIZED, &object).await;
        if key.ends_with(".json") {
            assert_eq!(event.code, 200, "{:?}", event.body);
            assert!(event.body["ignored"].is_string(), "{:?}", event.body);
        } else {
            assert_eq!(event.code, 202, "{:?}", event.body);
            assert_eq!(event.body["videoId"], id.as_str());
        }
    }
    let status = api.wait_final(&id).await;
    assert_eq!(status["state"], "ready", "{status:#}");
    assert_eq!(status["metadata"], json!({"title": "Beach"}));
    assert_eq!(status["input"], format!("gs://{INPUT}/{name}"));
}
