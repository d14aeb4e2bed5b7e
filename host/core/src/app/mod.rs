//! The resolved application: what the manifest loader produces and everything
//! downstream (the sandbox, the capabilities, the CLI and server) consumes.
//!
//! The stages, in order: the *authored* TOML ([`crate::manifest::authored`]) is
//! resolved into an [`App`] (this module), which the host binds to components
//! and services as a *loaded workflow* (`wasaga_host::workflow`). The plan the
//! orchestrator runs ([`crate::saga::Workflow`]) is the orchestrator's own type;
//! an [`App`] holds it.
//!
//! This module is data: it may not read files, parse TOML or run anything, and
//! nothing it holds points back at the loader.

pub mod grants;
pub mod hosts;
pub mod schedule;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

pub use grants::{
    Grant, GrantEntry, GrantParser, GrantPlace, GrantProblems, GrantRegistry, Grants, NamesGrant,
};
pub use source::{Source, display_path, line_col};

use crate::json::Json;
use crate::saga::Workflow;
use crate::schema::Schema;

/// A resolved manifest: the plan, and what the host needs to build each step.
#[derive(Debug)]
pub struct App {
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
    /// `[workflow] schedule`: when `host serve` starts runs on its own.
    pub schedule: Option<schedule::Schedule>,
    /// `[workflow] concurrency`: how many runs (of one key) execute at once.
    pub concurrency: Option<Concurrency>,
    /// Every file read (manifests, extensions, schemas) with its text, the
    /// top manifest first: what a run pins.
    pub sources: Vec<(PathBuf, String)>,
    /// The secrets the manifests declare, by name (where each may go; the
    /// host supplies the values).
    pub secrets: IndexMap<String, SecretSpec>,
}

/// `[workflow] concurrency = { key, limit, priority }`: at most `limit`
/// runs of one key execute at once; the others wait, `queued`, highest
/// priority first, then oldest first.
#[derive(Debug)]
pub struct Concurrency {
    /// The key (CEL over `input`); none: one key for the whole workflow.
    pub key: Option<crate::expr::Expr>,
    /// How many runs of a key execute at once.
    pub limit: u32,
    /// The priority (CEL over `input`, a number; higher first); none: 0.
    pub priority: Option<crate::expr::Expr>,
}

/// The environment variable a secret's value is read from:
/// `WASAGA_SECRET_` and the name in capitals, `-` as `_`.
pub fn secret_env_var(secret: &str) -> String {
    format!(
        "WASAGA_SECRET_{}",
        secret.to_ascii_uppercase().replace('-', "_")
    )
}

/// A secret as declared: `[secrets.NAME] hosts = [...]`.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// The only destinations its value is sent to.
    pub hosts: Vec<hosts::HostPattern>,
    /// `file:line` of its declaration, for messages.
    pub declared_at: String,
}

impl App {
    /// The manifest files involved (the top one first).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources
            .iter()
            .map(|(path, _)| path.as_path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    }
}

/// Per-call sandbox limits of a component.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most linear memory (all memories together) a call may use.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 128 << 20,
        }
    }
}

/// The `[config]` table of a manifest.
#[derive(Debug, Default, Clone)]
pub struct ConfigValues {
    values: IndexMap<String, Json>,
}

impl ConfigValues {
    /// The table from its entries.
    pub fn new(values: IndexMap<String, Json>) -> ConfigValues {
        ConfigValues { values }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.values.get(key)
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

/// What is wrong with `text` as a name for `what`, and the fix; `None` when
/// it follows the naming rule ([`is_valid_name`]).
pub fn name_problem(text: &str, what: &str) -> Option<(String, &'static str)> {
    (!is_valid_name(text)).then(|| {
        (
            format!("'{text}' is not a valid name for {what}"),
            "use letters, digits, '-' and '_', starting with a letter",
        )
    })
}

/// The naming rule of steps, collections and other names a manifest declares:
/// letters, digits, `-` and `_`, starting with a letter.
pub fn is_valid_name(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
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
