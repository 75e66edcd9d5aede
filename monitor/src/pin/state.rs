//! What a pin changed, kept on disk so that `routemon unpin` can restore it:
//! the replaced routes as the kernel's own messages, and a backup of every file
//! that was overwritten.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{
    files::{FileError, write_atomically},
    kernel_route::{KernelRoute, RouteKey},
};

/// The state file's name inside the state directory.
const STATE_FILE: &str = "pin.json";
/// The backups' directory inside the state directory.
const BACKUP_DIR: &str = "backup";
/// Schema version of the state file.
const VERSION: u32 = 1;

/// A state file that cannot be used.
#[derive(Debug, Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The file is not a pin state routemon understands.
    #[error("{path} is not a routemon pin state ({reason}); move it away to start afresh")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One replaced route: the original and what the pin made of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    /// The interface's name when pinned.
    pub interface: String,
    /// The original route.
    pub original: RouteKey,
    /// The original route's `RTM_NEWROUTE` message, hex.
    pub original_message: String,
    /// The pinned route.
    pub pinned: RouteKey,
    /// The pinned route's message, hex.
    pub pinned_message: String,
}

impl RouteRecord {
    /// Records a replacement.
    pub fn new(interface: &str, original: &KernelRoute, pinned: &KernelRoute) -> Self {
        Self {
            interface: interface.to_owned(),
            original: original.key.clone(),
            original_message: hex(&original.to_bytes()),
            pinned: pinned.key.clone(),
            pinned_message: hex(&pinned.to_bytes()),
        }
    }

    /// The original and the pinned route, decoded.
    pub fn routes(&self) -> Option<(KernelRoute, KernelRoute)> {
        let decode = |text: &str| unhex(text).and_then(|bytes| KernelRoute::from_bytes(&bytes));
        Some((
            decode(&self.original_message)?,
            decode(&self.pinned_message)?,
        ))
    }
}

/// One file the pin wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The file.
    pub path: PathBuf,
    /// Where its original content was saved; `None` when the pin created it.
    pub backup: Option<PathBuf>,
}

/// Everything one or more `pin --apply` runs changed since the node was unpinned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    /// Schema version.
    pub version: u32,
    /// Replaced routes, first pin first.
    pub routes: Vec<RouteRecord>,
    /// Written files.
    pub files: Vec<FileRecord>,
}

impl PinState {
    /// Reads the state from `dir`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, StateError> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FileError::new("reading", &path, source).into());
            }
        };
        let state: Self = serde_json::from_str(&text).map_err(|err| StateError::Invalid {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        if state.version != VERSION {
            return Err(StateError::Invalid {
                path,
                reason: format!("version {} (this routemon writes {VERSION})", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state to `dir` atomically, creating the directory.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let io = |action, source| StateError::from(FileError::new(action, &path, source));
        fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        let text = serde_json::to_string_pretty(self).expect("the state serialises");
        write_atomically(&path, &text).map_err(|e| io("writing", e))
    }

    /// Removes the state and its backups from `dir`.
    pub fn remove(dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        for (target, result) in [
            (&path, fs::remove_file(&path)),
            (
                &dir.join(BACKUP_DIR),
                fs::remove_dir_all(dir.join(BACKUP_DIR)),
            ),
        ] {
            if let Err(source) = result
                && source.kind() != std::io::ErrorKind::NotFound
            {
                return Err(FileError::new("removing", target, source).into());
            }
        }
        Ok(())
    }

    /// Records a route replacement. A route that an earlier pin already replaced
    /// keeps its original.
    pub fn record_route(&mut self, interface: &str, before: &KernelRoute, after: &KernelRoute) {
        if let Some(earlier) = self.routes.iter_mut().find(|r| r.pinned == before.key) {
            earlier.pinned = after.key.clone();
            earlier.pinned_message = hex(&after.to_bytes());
        } else {
            self.routes.push(RouteRecord::new(interface, before, after));
        }
    }

    /// Records a file about to be written, saving its current content (if any) as
    /// a backup in `dir`. A file recorded by an earlier pin keeps its first backup.
    pub fn record_file(
        &mut self,
        dir: &Path,
        path: &Path,
        current: Option<&str>,
    ) -> Result<(), StateError> {
        if self.files.iter().any(|f| f.path == path) {
            return Ok(());
        }
        let backup = match current {
            None => None,
            Some(content) => {
                let name = path
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .replace('/', "_");
                let backup = dir.join(BACKUP_DIR).join(name);
                let io = |action, source| StateError::from(FileError::new(action, &backup, source));
                fs::create_dir_all(dir.join(BACKUP_DIR)).map_err(|e| io("creating", e))?;
                write_atomically(&backup, content).map_err(|e| io("backing up to", e))?;
                Some(backup)
            }
        };
        self.files.push(FileRecord {
            path: path.to_path_buf(),
            backup,
        });
        Ok(())
    }

    /// A new, empty state.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            ..Self::default()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn state_saves_loads_and_keeps_first_backups() {
        let dir = std::env::temp_dir().join(format!("routemon-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(PinState::load(&dir).unwrap(), None);
        let mut state = PinState::new();
        let target = Path::new("/etc/systemd/network/05-ens5.network");
        state.record_file(&dir, target, Some("original\n")).unwrap();
        state.record_file(&dir, target, Some("second\n")).unwrap();
        state.save(&dir).unwrap();
        let loaded = PinState::load(&dir).unwrap().unwrap();
        assert_eq!(loaded, state);
        let backup = loaded.files[0].backup.as_ref().unwrap();
        assert_eq!(fs::read_to_string(backup).unwrap(), "original\n");
        fs::write(dir.join(STATE_FILE), "{").unwrap();
        assert!(matches!(
            PinState::load(&dir),
            Err(StateError::Invalid { .. })
        ));
        PinState::remove(&dir).unwrap();
        assert_eq!(PinState::load(&dir).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
