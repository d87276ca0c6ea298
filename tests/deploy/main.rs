//! What ships to Cloud Run: the service definition (cloudrun.yaml), the deploy script run in
//! dry-run, its gcloud commands checked by the real gcloud, and the monitoring files checked
//! against the metrics a running server exports.
//! One test binary, one module per file under test.

#[path = "../common/mod.rs"]
mod common;

mod fakes; // stand-ins for gcloud, curl and ffmpeg
mod gcloud; // deploy.sh's gcloud commands, run through the real gcloud with no account
mod monitoring; // monitoring/*.json: valid, and only metrics the service exports
mod queue; // deploy.sh queue: Pub/Sub topics, push subscriptions, IAM bindings
mod script; // deploy.sh --dry-run: the commands each subcommand would run
mod service; // cloudrun.yaml: every value, and every setting the service reads

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, as text.
pub fn read(path: &str) -> String {
    let full: PathBuf = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}
