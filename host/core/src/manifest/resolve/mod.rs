//! Turns authored manifests into the resolved [`App`]: checks names,
//! expressions, scopes, options and files; flattens nested workflows and hook
//! handlers; collects every problem in one pass (checks stay here, not in
//! serde, which would stop at the first).
//!
//! One `impl Resolver` block per concern, each in its own file: [`files`]
//! (reading a manifest), [`steps`] (declarations and options), [`flow`] (the
//! entries), [`scope`] (names bound by `as`), [`hooks`] (hooks, extensions,
//! subscribers). This file holds the shared state and error helpers.

mod files;
mod flow;
mod hooks;
mod schedule;
mod scope;
mod secrets;
mod steps;

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::LoadOptions;
use super::authored;
use super::error::{ManifestError, ManifestErrors, did_you_mean};
use super::units::{parse_duration, parse_size};
use crate::app::{
    App, BuildSpec, ComponentSpec, ConfigValues, GrantEntry, GrantPlace, GrantProblems, Grants,
    Limits, QuerySpec, Source, StepKind, SubscriberKind, SubscriberSpec, display_path,
    name_problem,
};
use crate::expr::Expr;
use crate::json::Json;
use crate::saga::{
    Backoff, Call, Entry, JsonCheck, OnFailure, RetryPolicy, Sleep, StepPolicy, StepSpec, Workflow,
};
use crate::schema::Schema;

/// The most retries a manifest may ask for.
const MAX_RETRIES: u32 = 100;
/// The largest memory limit a step may ask for.
const MAX_MEMORY: usize = 1 << 30;
/// The most items a `for-each` may run at once.
const MAX_CONCURRENCY: u32 = 256;
/// How long a subscriber delivery may take by default.
const SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds a flow entry can be: exactly one per entry (`for-each` goes with `run`).
const ENTRY_KINDS: [&str; 10] = [
    "run",
    "parallel",
    "when",
    "transform",
    "workflow",
    "hook",
    "query",
    "for-each",
    "sleep",
    "sleep-until",
];

pub fn load(path: &Path, options: &LoadOptions) -> Result<App, ManifestErrors> {
    let mut resolver = Resolver {
        options,
        errors: ManifestErrors::default(),
        steps: Vec::new(),
        components: Vec::new(),
        stack: Vec::new(),
        nested_files: 0,
        sources: Vec::new(),
        subscribers: Vec::new(),
        secrets: IndexMap::new(),
    };
    let resolved = resolver.file(path, "", None);
    if !resolver.errors.is_empty() {
        return Err(resolver.errors);
    }
    let top = resolved.expect("a file without errors resolves");
    Ok(App {
        source: top.source,
        workflow: Arc::new(Workflow {
            name: top.name,
            steps: resolver.steps,
            flow: top.flow,
            output: top.output,
            timeout: top.options.timeout,
            output_check: top.options.output_schema.map(|s| s as Arc<dyn JsonCheck>),
        }),
        components: resolver.components,
        subscribers: resolver.subscribers,
        input_schema: top.options.input_schema,
        idempotent: top.options.idempotent,
        retention: top.options.retention,
        schedule: top.options.schedule,
        concurrency: top.options.concurrency,
        sources: resolver.sources,
        secrets: resolver.secrets,
    })
}

/// How deep nested workflows may go (the loader recurses once per level).
const MAX_NESTING: usize = 32;

/// How many nested workflow entries one manifest may resolve in all (each
/// copies the nested flow into the plan).
const MAX_NESTED_FILES: usize = 1000;

struct Resolver<'a> {
    options: &'a LoadOptions,
    errors: ManifestErrors,
    /// Every step of every file, by global index.
    steps: Vec<StepSpec>,
    components: Vec<ComponentSpec>,
    /// The nesting chain, to reject cycles.
    stack: Vec<PathBuf>,
    /// How many nested workflow entries were resolved so far.
    nested_files: usize,
    sources: Vec<(PathBuf, String)>,
    subscribers: Vec<SubscriberSpec>,
    /// Every file's `[secrets]`, by name.
    secrets: IndexMap<String, crate::app::SecretSpec>,
}

/// One manifest file being resolved.
struct File {
    source: Source,
    dir: PathBuf,
    /// Prefix of call names (`child/` inside a nested workflow).
    prefix: String,
    /// Step name → global index.
    steps: IndexMap<String, usize>,
    /// Steps already called once in this file.
    called: HashSet<String>,
    /// Call names used in this file.
    nodes: HashSet<String>,
    /// Hook name → its handlers (global step indices).
    hooks: IndexMap<String, Vec<usize>>,
    /// Hooks the flow uses.
    used_hooks: HashSet<String>,
    /// Every name bound, with the offset of its entry.
    bound_at: Vec<(String, usize)>,
    /// `skip-to` targets to check once the flow is known: (target, span).
    skip_targets: Vec<(String, Range<usize>)>,
    /// Hooks that extension manifests target, with where they say so.
    extension_hooks: Vec<(Source, Vec<Named>)>,
    /// The workflow's name.
    workflow: String,
    /// The secrets this file declares (what its steps may be granted).
    secrets: Vec<String>,
}

/// A name and where it is written.
type Named = (String, Range<usize>);

/// The names visible at a point of the flow, with the line that bound them.
#[derive(Clone, Default)]
struct Names {
    bound: IndexMap<String, usize>,
}

/// What `[workflow]` says besides the name.
#[derive(Default)]
struct WorkflowOptions {
    input_schema: Option<Arc<Schema>>,
    output_schema: Option<Arc<Schema>>,
    timeout: Option<Duration>,
    idempotent: bool,
    retention: Option<Duration>,
    schedule: Option<crate::app::schedule::Schedule>,
    concurrency: Option<crate::app::Concurrency>,
}

struct Resolved {
    source: Source,
    name: String,
    flow: Arc<[Entry]>,
    output: Option<Expr>,
    options: WorkflowOptions,
}

/// The fields a step declaration and a hook handler share.
struct StepFields<'a> {
    component: &'a Spanned<String>,
    build: Option<&'a Spanned<authored::Build>>,
    grants: Option<&'a Spanned<authored::Grants>>,
    retries: Option<&'a Spanned<authored::Retries>>,
    timeout: Option<&'a Spanned<String>>,
    compensate: Option<bool>,
    config: Option<&'a Spanned<toml::Value>>,
    on_permanent_failure: Option<&'a Spanned<String>>,
    memory: Option<&'a Spanned<String>>,
    input_schema: Option<&'a Spanned<String>>,
    output_schema: Option<&'a Spanned<String>>,
    is_async: bool,
    background: bool,
}

impl<'a> StepFields<'a> {
    fn of_step(s: &'a authored::StepSection) -> StepFields<'a> {
        StepFields {
            component: &s.component,
            build: s.build.as_ref(),
            grants: s.grants.as_ref(),
            retries: s.retries.as_ref(),
            timeout: s.timeout.as_ref(),
            compensate: s.compensate,
            config: s.config.as_ref(),
            on_permanent_failure: s.on_permanent_failure.as_ref(),
            memory: s.memory.as_ref(),
            input_schema: s.input_schema.as_ref(),
            output_schema: s.output_schema.as_ref(),
            is_async: s.is_async.unwrap_or(false),
            background: s.background.unwrap_or(false),
        }
    }

    fn of_handler(h: &'a authored::Handler) -> StepFields<'a> {
        StepFields {
            component: &h.component,
            build: h.build.as_ref(),
            grants: h.grants.as_ref(),
            retries: h.retries.as_ref(),
            timeout: h.timeout.as_ref(),
            compensate: h.compensate,
            config: h.config.as_ref(),
            on_permanent_failure: h.on_permanent_failure.as_ref(),
            memory: h.memory.as_ref(),
            input_schema: h.input_schema.as_ref(),
            output_schema: h.output_schema.as_ref(),
            is_async: false,
            background: false,
        }
    }
}

impl Resolver<'_> {
    fn error(
        &mut self,
        file: &File,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> &mut ManifestError {
        self.errors
            .push(ManifestError::at(&file.source, span, message));
        self.errors.errors.last_mut().expect("just pushed")
    }

    fn add_help(&mut self, help: impl Into<String>) {
        if let Some(last) = self.errors.errors.last_mut() {
            last.help = Some(help.into());
        }
    }

    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        let text = self.options.files.read(path)?;
        if !self.sources.iter().any(|(p, _)| p == path) {
            self.sources.push((path.to_path_buf(), text.clone()));
        }
        Ok(text)
    }
}

/// A TOML syntax or shape error as a located message, with a suggestion for typos.
fn toml_error(source: &Source, error: &toml::de::Error) -> ManifestError {
    let message = error.message().trim().to_string();
    let span = error.span().unwrap_or(0..0);
    let mut located = ManifestError::at(source, span, message.clone());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let help = match did_you_mean(field, expected.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("the keys allowed here are: {}", expected.join(", ")),
        };
        located.help(help).label("unknown key");
    } else if message.starts_with("missing field") {
        located.help("add the missing key to this table");
    }
    located
}

/// An absolute, normalized path (the file need not exist).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    normalize(&joined)
}

/// `a/b/../c` as `a/c`, without touching the file system (the file may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A TOML value as JSON.
fn to_json(value: &toml::Value) -> Result<Json, String> {
    serde_json::to_value(value)
        .map(Json::from_value)
        .map_err(|e| e.to_string())
}
