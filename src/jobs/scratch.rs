//! Per-job scratch folders: `vt-<pid>-<video id>-<random>` under `SCRATCH_DIR`, removed when the
//! job ends. A process killed outright cannot remove its own, so each start removes those whose
//! process is gone (the pid in the name), never another live process's.

use std::path::Path;

use tempfile::TempDir;

/// A new scratch folder for `video_id`, removed when dropped.
pub fn create(dir: &Path, video_id: &str) -> std::io::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("vt-{}-{video_id}-", std::process::id()))
        .tempdir_in(dir)
}

/// Removes scratch folders left by processes that no longer run; returns how many.
pub fn remove_orphans(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("vt-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = create(dir.path(), "v1").unwrap();
        // No process has pid 4194304 (above Linux's pid_max).
        std::fs::create_dir(dir.path().join("vt-4194304-v2-abc")).unwrap();
        std::fs::create_dir(dir.path().join("unrelated")).unwrap();
        assert_eq!(remove_orphans(dir.path()), 1);
        assert!(mine.path().exists());
        assert!(dir.path().join("unrelated").exists());
        assert!(!dir.path().join("vt-4194304-v2-abc").exists());
    }
}
