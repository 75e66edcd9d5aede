//! File changes: planned as before/after contents, shown as unified diffs, written
//! atomically.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

/// Reading or writing a file failed: what was being done, to which file.
#[derive(Debug, Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    /// What was being done (`reading`, `backing up to`, …).
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// The error of `action` on `path`.
    pub fn new(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A planned change to one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// Its content now; `None` when it does not exist.
    pub before: Option<String>,
    /// Its content after the change; `None` to remove it.
    pub after: Option<String>,
}

impl FileChange {
    /// Whether the change changes nothing.
    pub fn is_noop(&self) -> bool {
        self.before == self.after
    }

    /// A unified diff (`--- path`, `+++ path`), empty for a no-op.
    pub fn diff(&self) -> String {
        if self.is_noop() {
            return String::new();
        }
        let path = self.path.display().to_string();
        let old = self.before.as_deref().unwrap_or("");
        let new = self.after.as_deref().unwrap_or("");
        similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .header(
                if self.before.is_some() {
                    &path
                } else {
                    "/dev/null"
                },
                if self.after.is_some() {
                    &path
                } else {
                    "/dev/null"
                },
            )
            .to_string()
    }

    /// Carries out the change.
    pub fn apply(&self) -> std::io::Result<()> {
        match &self.after {
            Some(content) => write_atomically(&self.path, content),
            None => match fs::remove_file(&self.path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            },
        }
    }

    /// The change that undoes this one.
    pub fn reversed(&self) -> Self {
        Self {
            path: self.path.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
        }
    }
}

/// Reads a file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes `content` to `path` so that readers see the old or the new file, never a
/// part: a temporary file in the same directory, synced, renamed over the target,
/// and the directory synced. The file gets mode 0644 whatever the umask, as
/// networkd (which reads as its own user) expects. Nothing planted in the
/// directory is followed: the temporary file is created exclusively (`O_EXCL`
/// fails on any existing entry, symlinks included) and the rename replaces a
/// symlink at `path` instead of writing through it.
pub fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.routemon-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        // The umask may have cleared bits of the mode asked for at creation.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Fails unless a file can be created in `dir` (it is created and removed again).
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".routemon-probe-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_created_changed_and_removed_files() {
        let created = FileChange {
            path: "/etc/systemd/network/05-ens5.network".into(),
            before: None,
            after: Some("[Match]\nName=ens5\n".into()),
        };
        let diff = created.diff();
        assert!(diff.starts_with("--- /dev/null\n+++ /etc/systemd/network/05-ens5.network\n"));
        assert!(diff.contains("+[Match]\n+Name=ens5\n"));
        assert!(created.reversed().diff().contains("+++ /dev/null"));
        let same = FileChange {
            before: created.after.clone(),
            ..created.clone()
        };
        assert!(same.is_noop());
        assert_eq!(same.diff(), "");
    }

    #[test]
    fn atomic_write_is_0644_and_never_follows_planted_symlinks() {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        let dir = std::env::temp_dir().join(format!("routemon-files-safe-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();

        // A symlink planted at the target is replaced, not written through.
        let path = dir.join("05-ens5.network");
        symlink(&victim, &path).unwrap();
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o077) };
        let written = write_atomically(&path, "[Match]\n");
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        written.unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "0644 despite umask 077"
        );

        // A symlink planted at the temporary name makes the write fail, untouched.
        let temp = dir.join(format!(".06-x.network.routemon-{}", std::process::id()));
        symlink(&victim, &temp).unwrap();
        assert!(write_atomically(&dir.join("06-x.network"), "x").is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("routemon-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("05-ens5.network");
        write_atomically(&path, "one\n").unwrap();
        write_atomically(&path, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        check_writable(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(check_writable(&dir).is_err());
    }
}
