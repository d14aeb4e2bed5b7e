//! Where manifests and schema files are read from: the disk, or the snapshot a
//! run pinned when it started (so editing a manifest never changes a run in flight).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A source of manifest files.
pub trait Files: Send + Sync {
    /// The text of the file at `path`.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The `.toml` files in `dir` (for extension manifests).
    fn tomls(&self, dir: &Path) -> Vec<PathBuf>;
}

/// The file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn tomls(&self, dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

/// Files captured earlier (a run's pinned manifests); nothing else exists.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    files: HashMap<PathBuf, String>,
}

impl Snapshot {
    /// A snapshot of these files.
    pub fn new(files: impl IntoIterator<Item = (PathBuf, String)>) -> Snapshot {
        Snapshot {
            files: files.into_iter().collect(),
        }
    }
}

impl Files for Snapshot {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not in the run's pinned files",
            )
        })
    }

    fn tomls(&self, dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "toml"))
            .cloned()
            .collect();
        found.sort();
        found
    }
}
