//! A stand-in for Google's token issuer: RSA keys made with the openssl CLI, a JWKS served on
//! 127.0.0.1 by a tiny axum server that counts its fetches, and ID tokens signed like Google's
//! (RS256, `kid`, `iss`, `aud`, `exp`, `email`, `email_verified`).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Google's issuer, as the verifier expects it.
pub const ISSUER: &str = "https://accounts.google.com";
/// The audience the test services are configured with.
pub const AUDIENCE: &str = "https://transcoder.example.run.app";
/// The service account the test services allow.
pub const ALLOWED: &str = "eventarc@project.iam.gserviceaccount.com";
/// The `kid` the JWKS publishes.
pub const KID: &str = "test-key-1";

/// An RSA private key in PEM, made once per test run for each cell.
fn rsa_pem(cell: &'static OnceLock<Vec<u8>>) -> &'static [u8] {
    cell.get_or_init(|| {
        let out = Command::new("openssl")
            .args(["genrsa", "2048"])
            .output()
            .expect("the openssl CLI makes the test keys");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    })
}

static GOOGLE_PEM: OnceLock<Vec<u8>> = OnceLock::new();
static FORGER_PEM: OnceLock<Vec<u8>> = OnceLock::new();

/// The key Google would sign with (published in the JWKS).
pub fn google_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(rsa_pem(&GOOGLE_PEM)).unwrap()
}

/// Another key, never published: what a forger has.
pub fn forger_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(rsa_pem(&FORGER_PEM)).unwrap()
}

/// The JWKS publishing [`google_key`] under [`KID`].
fn jwks() -> JwkSet {
    let mut jwk = Jwk::from_encoding_key(&google_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(KID.into());
    JwkSet { keys: vec![jwk] }
}

/// The JWKS served on 127.0.0.1 until dropped.
pub struct JwksServer {
    pub url: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start() -> Self {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let set = serde_json::to_value(jwks()).unwrap();
        let app = axum::Router::new().route(
            "/certs",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let set = set.clone();
                async move { Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, fetches, task }
    }

    /// How many times the keys were fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// `spawn_app` flags turning the ID-token check on against this JWKS.
    pub fn flags(&self) -> Vec<String> {
        [
            "--trigger-audience",
            AUDIENCE,
            "--trigger-allowed-emails",
            &format!("someone-else@example.com, {ALLOWED}"),
            "--oidc-jwks-url",
            &self.url,
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a valid token for [`ALLOWED`]; tests change one thing at a time.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "109876543210987654321",
        "email": ALLOWED,
        "email_verified": true,
        "iat": now() - 60,
        "exp": now() + 3600,
    })
}

/// `claims` with `changes` merged in (a `null` removes the claim).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (k, v) in changes.as_object().unwrap() {
        match v {
            Value::Null => claims.as_object_mut().unwrap().remove(k),
            v => claims.as_object_mut().unwrap().insert(k.clone(), v.clone()),
        };
    }
    claims
}

/// An RS256 token signed with `key` under `kid`.
pub fn sign_with(claims: &Value, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token signed with Google's key.
pub fn sign(claims: &Value) -> String {
    sign_with(claims, &google_key(), KID)
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": KID})),
        b64(claims)
    )
}

/// An HS256 token keyed with the published RSA modulus: the classic algorithm confusion, where
/// a verifier that trusts the header's `alg` checks an HMAC with a public value.
pub fn hmac_with_public_key(claims: &Value) -> String {
    let jwk = serde_json::to_value(jwks().keys[0].clone()).unwrap();
    let secret = jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret)).unwrap()
}
