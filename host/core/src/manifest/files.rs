//! Where manifests and schema files are read from: the disk, or the snapshot a
//! run pinned when it started (so editing a manifest never changes a run in flight).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The largest manifest (or schema) file read.
pub const MAX_MANIFEST: usize = 1 << 20;

/// A file's bytes as text, or an error that says where the first byte that
/// is not UTF-8 is.
pub fn text_of(bytes: Vec<u8>) -> std::io::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text: line {line}, column {column} (byte {}) is not valid UTF-8; save the file as UTF-8",
                valid.len()
            ),
        )
    })
}

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
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_MANIFEST as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > MAX_MANIFEST {
            return Err(std::io::Error::other(format!(
                "it is larger than {} MiB, the most a manifest may be",
                MAX_MANIFEST >> 20
            )));
        }
        text_of(bytes)
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
