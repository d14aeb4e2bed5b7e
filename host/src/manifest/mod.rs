//! Manifests: TOML → a validated plan the orchestrator runs. Every problem is
//! reported before any step runs, with the file, line and column and a hint;
//! the authored form ([`authored`]) and the resolved plan ([`Manifest`]) are
//! different types.
//!
//! It may not run steps or load components (it only checks that their files
//! exist).

pub mod authored;
mod error;
mod files;
mod resolve;
mod units;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ManifestError, ManifestErrors, Source};
pub use files::{Disk, Files, Snapshot};
pub use units::{parse_duration, parse_size};

use crate::capabilities::{ConfigValues, Grants};
use crate::saga::Workflow;
use crate::schema::Schema;
use crate::wasm::Limits;

/// How to load.
#[derive(Clone)]
pub struct LoadOptions {
    /// Whether a missing component file is an error (not when `--build` will
    /// build it).
    pub require_components: bool,
    /// More folders to look for extension manifests in (besides the
    /// manifest's own folder).
    pub extension_dirs: Vec<PathBuf>,
    /// Where files are read from.
    pub files: Arc<dyn Files>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            require_components: true,
            extension_dirs: Vec::new(),
            files: Arc::new(Disk),
        }
    }
}

/// A validated manifest: the plan, and what the host needs to build each step.
#[derive(Debug)]
pub struct Manifest {
    /// The top manifest file and text.
    pub source: Source,
    /// The plan (nested workflows and hook handlers flattened into it).
    pub workflow: Arc<Workflow>,
    /// How to make each step of `workflow.steps`, by index.
    pub components: Vec<ComponentSpec>,
    /// Who receives the run's events.
    pub subscribers: Vec<SubscriberSpec>,
    /// The workflow's `input-schema`.
    pub input_schema: Option<Arc<Schema>>,
    /// `[workflow] idempotent`: a transaction id that already ran returns its result.
    pub idempotent: bool,
    /// `[workflow] retention`: how long finished runs are kept.
    pub retention: Option<Duration>,
    /// Every file read (manifests, extensions, schemas) with its text, the
    /// top manifest first: what a run pins.
    pub sources: Vec<(PathBuf, String)>,
}

impl Manifest {
    /// The manifest files involved (the top one first).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources
            .iter()
            .map(|(path, _)| path.as_path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    }
}

/// How to make one step.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The step's call name.
    pub step: String,
    /// A component, or a built-in.
    pub kind: StepKind,
    /// What the step may reach.
    pub grants: Grants,
    /// Its sandbox limits.
    pub limits: Limits,
    /// The `[config]` table of the manifest that declares it.
    pub config: Arc<ConfigValues>,
    /// Where it is declared (`file:line`), for messages.
    pub declared_at: String,
    /// Checked before each invoke.
    pub input_schema: Option<Arc<Schema>>,
    /// Checked after each successful invoke.
    pub output_schema: Option<Arc<Schema>>,
}

/// What implements a step.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// A WebAssembly component.
    Component {
        /// The component file.
        path: PathBuf,
        /// How to build it, if declared.
        build: Option<BuildSpec>,
    },
    /// A `query` entry: reads entities, no component.
    Query(QuerySpec),
}

impl ComponentSpec {
    /// The component file, for a component step.
    pub fn component(&self) -> Option<(&Path, Option<&BuildSpec>)> {
        match &self.kind {
            StepKind::Component { path, build } => Some((path, build.as_ref())),
            StepKind::Query(_) => None,
        }
    }
}

/// A `query` flow entry.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    /// The entities collection.
    pub entity: String,
    /// The fields to return (all when empty).
    pub fields: Vec<String>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Include soft-deleted entities.
    pub with_deleted: bool,
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

/// A `[[subscribers]]` entry.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// Its name, for logs.
    pub name: String,
    /// A component or a command.
    pub kind: SubscriberKind,
    /// Event name patterns (`*` matches anything); empty: every event.
    pub events: Vec<String>,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Where it is declared (`file:line`).
    pub declared_at: String,
}

/// How a subscriber is implemented.
#[derive(Debug, Clone)]
pub enum SubscriberKind {
    /// A component of the world `subscriber`.
    Component {
        /// The component file.
        path: PathBuf,
        /// How to build it.
        build: Option<BuildSpec>,
        /// Its sandbox limits.
        limits: Limits,
    },
    /// A shell command that reads the event as JSON on stdin.
    Command {
        /// The command.
        command: String,
        /// Where it runs.
        workdir: PathBuf,
    },
}

impl SubscriberSpec {
    /// Whether this subscriber wants events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|pattern| glob_match(pattern, name))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Loads and validates the manifest at `path` and the manifests it nests
/// or that extend it.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    resolve::load(path, options)
}

#[cfg(test)]
mod glob_tests {
    #[test]
    fn patterns() {
        let m = super::glob_match;
        assert!(m("brand.*", "brand.created"));
        assert!(m("*", "anything"));
        assert!(m("run.done", "run.done"));
        assert!(!m("run.done", "run.failed"));
        assert!(m("step.*ed", "step.completed"));
        assert!(!m("step.*ed", "step.start"));
        assert!(m("*.created", "brand.created"));
    }
}
