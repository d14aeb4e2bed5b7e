//! Manifests: TOML → a validated plan the orchestrator runs. Every problem is
//! reported before any step runs, with the file, line and column and a hint;
//! the authored form ([`authored`]) and the resolved plan ([`Manifest`]) are
//! different types.
//!
//! It may not run steps or load components (it only checks that their files
//! exist).

pub mod authored;
mod error;
mod resolve;
mod units;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ManifestError, ManifestErrors, Source};
pub use units::{parse_duration, parse_size};

use crate::capabilities::{ConfigValues, Grants};
use crate::saga::Workflow;
use crate::wasm::Limits;

/// How strictly to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Whether a missing component file is an error (not when `--build` will
    /// build it).
    pub require_components: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            require_components: true,
        }
    }
}

/// A validated manifest: the plan, and what the host needs to build each step.
#[derive(Debug)]
pub struct Manifest {
    /// The top manifest file and text.
    pub source: Source,
    /// The plan (nested workflows flattened into it).
    pub workflow: Arc<Workflow>,
    /// How to make each step of `workflow.steps`, by index.
    pub components: Vec<ComponentSpec>,
    /// Every manifest file involved (the top one first).
    pub files: Vec<PathBuf>,
}

/// How to make one step: its component, build command, grants and limits.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The step's name.
    pub step: String,
    /// The component file.
    pub path: PathBuf,
    /// How to build it, if declared.
    pub build: Option<BuildSpec>,
    /// What the step may reach.
    pub grants: Grants,
    /// Its sandbox limits.
    pub limits: Limits,
    /// The `[config]` table of the manifest that declares it.
    pub config: Arc<ConfigValues>,
    /// Where it is declared (`file:line`), for messages.
    pub declared_at: String,
}

/// A component's build command (like Spin's `[component.build]`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// A shell command.
    pub command: String,
    /// Where it runs (the manifest's folder by default).
    pub workdir: PathBuf,
    /// Files whose change makes the component stale (globs, relative to
    /// `workdir`); none: the build tool decides.
    pub watch: Vec<String>,
}

/// Loads and validates the manifest at `path` and the manifests it nests.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    resolve::load(path, options)
}
