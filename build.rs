//! Fetches the pinned hls.js the player page is served with (`GET /assets/hls.min.js`), so the
//! page plays with no third-party CDN, offline and in air-gapped deploys. The npm registry's
//! tarball is checked against its SHA-512 before `dist/hls.min.js` is taken out of it into
//! `OUT_DIR`; nothing third-party is kept in the repository. A builder without network access
//! sets `HLS_JS_TARBALL` to a copy of the same tarball (checked the same way).
//! Needs `curl` (for the download) and `tar`, as Debian and the `rust` images have them.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha512};

/// The hls.js release served; change the three together.
const VERSION: &str = "1.7.4";
const TARBALL: &str = "https://registry.npmjs.org/hls.js/-/hls.js-1.7.4.tgz";
/// The npm registry's `dist.integrity` for that tarball (sha512, here in hex).
const SHA512: &str = "dc697119d3ef4f6607bd060eb7ec8ecd3fc3122a2bfea255348ca51c0efb9207\
                      a805375042a8bbd06c1e7cd11498741e346ca30bc53adbe6ebbaa5bf4e99beb6";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=HLS_JS_TARBALL");
    println!("cargo::rustc-env=HLS_JS_VERSION={VERSION}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let archive = match std::env::var_os("HLS_JS_TARBALL") {
        Some(path) => PathBuf::from(path),
        None => {
            let archive = out.join(format!("hls.js-{VERSION}.tgz"));
            if !sha512_matches(&archive) {
                download(&archive);
            }
            archive
        }
    };
    if !sha512_matches(&archive) {
        panic!(
            "{} is not hls.js {VERSION} from the npm registry: its SHA-512 is not {SHA512}",
            archive.display()
        );
    }
    let script = run(
        Command::new("tar")
            .arg("-xzOf")
            .arg(&archive)
            .arg("package/dist/hls.min.js"),
        "tar",
    );
    assert!(
        script.len() > 100_000,
        "package/dist/hls.min.js in {} is only {} bytes",
        archive.display(),
        script.len()
    );
    std::fs::write(out.join("hls.min.js"), script).expect("write hls.min.js into OUT_DIR");
}

fn sha512_matches(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let digest = Sha512::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex == SHA512
}

/// Downloads the tarball to `archive` (through a temporary name, so a cut download is never
/// taken for the file).
fn download(archive: &Path) {
    let partial = archive.with_extension("part");
    run(
        Command::new("curl")
            .args(["-fsSL", "--retry", "3", "--max-time", "300", "-o"])
            .arg(&partial)
            .arg(TARBALL),
        "curl (or set HLS_JS_TARBALL to a copy of the tarball)",
    );
    std::fs::rename(&partial, archive).expect("rename the downloaded tarball");
}

/// `command`'s standard output; panics with its error output when it fails.
fn run(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
