//! The manifest loader: authored TOML ([`authored`]) → the resolved
//! [`App`](crate::app::App). Every problem is reported before any step runs,
//! with the file, line and column and a hint.
//!
//! It may not run steps or load components (it only checks that their files
//! exist), and it knows no capability by name: `grants` are read by the
//! parsers of [`LoadOptions::grants`].

// The authored types mirror the TOML keys one to one; the keys are documented
// in the README's manifest reference, not twice.
#[allow(missing_docs)]
pub mod authored;
mod error;
mod files;
mod resolve;
mod units;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ManifestError, ManifestErrors};
pub use files::{Disk, Files, MAX_MANIFEST, Snapshot, text_of};
pub use units::{parse_duration, parse_size};

pub use crate::app::Source;
use crate::app::{App, GrantRegistry};

/// How to load.
#[derive(Clone)]
pub struct LoadOptions {
    /// The capabilities whose grants a manifest may write.
    pub grants: GrantRegistry,
    /// Whether a missing component file is an error (not when `--build` will
    /// build it).
    pub require_components: bool,
    /// More folders to look for extension manifests in (besides the
    /// manifest's own folder).
    pub extension_dirs: Vec<PathBuf>,
    /// Where files are read from.
    pub files: Arc<dyn Files>,
}

impl LoadOptions {
    /// Components must exist, extensions only beside the manifest, files from disk.
    pub fn new(grants: GrantRegistry) -> LoadOptions {
        LoadOptions {
            grants,
            require_components: true,
            extension_dirs: Vec::new(),
            files: Arc::new(Disk),
        }
    }
}

/// Loads and validates the manifest at `path` and the manifests it nests
/// or that extend it.
pub fn load(path: &Path, options: &LoadOptions) -> Result<App, ManifestErrors> {
    resolve::load(path, options)
}
