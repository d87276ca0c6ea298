//! hls.js for the player page: the newest 1.x from the npm registry, checked against its
//! integrity, and a loopback server for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::checked_output;

/// Downloads the newest hls.js 1.x from the npm registry (checking the tarball's integrity)
/// and returns the path of its `dist/hls.min.js`. `curl` does the HTTPS: the crate's reqwest
/// is built without TLS.
pub async fn download_hls_js(dir: &Path) -> PathBuf {
    let dir = dir.join("hls.js");
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).unwrap();
        let registry = "https://registry.npmjs.org/hls.js";
        let mut release: Value = serde_json::from_slice(&curl(&[&format!("{registry}/latest")]))
            .expect("the registry answers JSON");
        if !release["version"].as_str().unwrap_or("").starts_with("1.") {
            // The page is written for hls.js 1.x (the service's default URL is hls.js@1).
            let all: Value = serde_json::from_slice(&curl(&[
                "-H",
                "Accept: application/vnd.npm.install-v1+json",
                registry,
            ]))
            .unwrap();
            let newest = all["versions"]
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(v, release)| {
                    let rest = v.strip_prefix("1.").filter(|r| !r.contains('-'))?;
                    let (minor, patch) = rest.split_once('.')?;
                    Some((
                        (minor.parse::<u32>().ok()?, patch.parse::<u32>().ok()?),
                        release,
                    ))
                })
                .max_by_key(|(v, _)| *v)
                .expect("the registry lists hls.js 1.x");
            release = newest.1.clone();
        }
        let version = release["version"].as_str().unwrap_or("?").to_string();
        let tarball = release["dist"]["tarball"].as_str().unwrap();
        let integrity = release["dist"]["integrity"].as_str().unwrap();
        let archive = dir.join("hls.js.tgz");
        curl(&["-o", archive.to_str().unwrap(), tarball]);
        let expected = integrity
            .strip_prefix("sha512-")
            .expect("a sha512 integrity");
        assert_eq!(
            sha512_base64(&archive),
            expected,
            "hls.js {version}: the tarball does not match its integrity"
        );
        checked_output(
            Command::new("tar")
                .args([
                    "-xzf",
                    archive.to_str().unwrap(),
                    "-C",
                    dir.to_str().unwrap(),
                ])
                .arg("package/dist/hls.min.js"),
            "tar",
        );
        eprintln!("hls.js {version} from {tarball}");
        dir.join("package/dist/hls.min.js")
    })
    .await
    .unwrap()
}

/// `curl -fsSL <args>`'s output; panics with curl's message when it fails.
fn curl(args: &[&str]) -> Vec<u8> {
    checked_output(
        Command::new("curl")
            .args(["-fsSL", "--retry", "2", "--max-time", "120"])
            .args(args),
        "curl must be installed (apt-get install curl)",
    )
}

/// The file's SHA-512 in base64, as npm's `integrity` has it.
fn sha512_base64(path: &Path) -> String {
    use base64::Engine;
    let out = checked_output(Command::new("sha512sum").arg(path), "sha512sum");
    let text = String::from_utf8(out).unwrap();
    let hex = text.split_whitespace().next().unwrap_or("");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Serves `file` (if it exists) as `/hls.min.js` on 127.0.0.1; every other path is 404.
/// Returns the base URL; the server lives as long as the test's runtime.
pub async fn serve_file(file: &Path) -> String {
    let body = std::fs::read(file).unwrap_or_default();
    let exists = file.exists();
    let router = axum::Router::new().route(
        "/hls.min.js",
        axum::routing::get(move || async move {
            match exists {
                true => axum::response::Response::builder()
                    .header("content-type", "text/javascript")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
                false => axum::response::Response::builder()
                    .status(404)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}
