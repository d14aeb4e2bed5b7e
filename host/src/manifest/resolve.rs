//! Turns authored manifests into the plan: checks names, expressions, scopes,
//! options and files; flattens nested workflows and hook handlers; collects
//! every problem.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::authored;
use super::error::{ManifestError, ManifestErrors, Source, did_you_mean};
use super::units::{parse_duration, parse_size};
use super::{
    BuildSpec, ComponentSpec, LoadOptions, Manifest, QuerySpec, StepKind, SubscriberKind,
    SubscriberSpec,
};
use crate::capabilities::grants::GrantPlace;
use crate::capabilities::{ConfigValues, Grants};
use crate::expr::Expr;
use crate::json::Json;
use crate::saga::{
    Backoff, Call, Entry, JsonCheck, OnFailure, RetryPolicy, StepPolicy, StepSpec, Workflow,
};
use crate::schema::Schema;
use crate::wasm::Limits;

/// The most retries a manifest may ask for.
const MAX_RETRIES: u32 = 100;
/// The largest memory limit a step may ask for.
const MAX_MEMORY: usize = 1 << 30;
/// The most items a `for-each` may run at once.
const MAX_CONCURRENCY: u32 = 256;
/// How long a subscriber delivery may take by default.
const SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds a flow entry can be: exactly one per entry (`for-each` goes with `run`).
const ENTRY_KINDS: [&str; 8] = [
    "run",
    "parallel",
    "when",
    "transform",
    "workflow",
    "hook",
    "query",
    "for-each",
];

pub fn load(path: &Path, options: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    let mut resolver = Resolver {
        options,
        errors: ManifestErrors::default(),
        steps: Vec::new(),
        components: Vec::new(),
        stack: Vec::new(),
        sources: Vec::new(),
        subscribers: Vec::new(),
    };
    let resolved = resolver.file(path, "", None);
    if !resolver.errors.is_empty() {
        return Err(resolver.errors);
    }
    let top = resolved.expect("a file without errors resolves");
    Ok(Manifest {
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
        sources: resolver.sources,
    })
}

struct Resolver<'a> {
    options: &'a LoadOptions,
    errors: ManifestErrors,
    /// Every step of every file, by global index.
    steps: Vec<StepSpec>,
    components: Vec<ComponentSpec>,
    /// The nesting chain, to reject cycles.
    stack: Vec<PathBuf>,
    sources: Vec<(PathBuf, String)>,
    subscribers: Vec<SubscriberSpec>,
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

    /// Resolves one workflow manifest (the top one, or a nested one at `from`).
    fn file(
        &mut self,
        path: &Path,
        prefix: &str,
        from: Option<(&File, Range<usize>)>,
    ) -> Option<Resolved> {
        let path = absolute(path);
        let text = match self.read(&path) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read the manifest {}: {e}", path.display());
                match from {
                    Some((parent, span)) => {
                        self.error(parent, span, message);
                        self.add_help(
                            "the path is relative to the folder of the manifest that names it",
                        );
                    }
                    None => self.errors.push(ManifestError::file(&path, message)),
                }
                return None;
            }
        };
        let source = Source {
            path: path.clone(),
            text: text.into(),
        };
        let authored: authored::Manifest = match toml::from_str(&source.text) {
            Ok(m) => m,
            Err(e) => {
                self.errors.push(toml_error(&source, &e));
                return None;
            }
        };
        self.stack.push(path.clone());
        let mut file = File {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            source,
            prefix: prefix.to_string(),
            steps: IndexMap::new(),
            called: HashSet::new(),
            nodes: HashSet::new(),
            hooks: IndexMap::new(),
            used_hooks: HashSet::new(),
            bound_at: Vec::new(),
            skip_targets: Vec::new(),
            extension_hooks: Vec::new(),
            workflow: authored.workflow.get_ref().name.get_ref().clone(),
        };
        let section = authored.workflow.get_ref();
        let name = section.name.clone();
        self.check_name(&file, &name, "a workflow name");
        let options = self.workflow_options(&file, section);
        let config = Arc::new(self.config_table(&file, &authored.config));
        for (step_name, step) in &authored.steps {
            self.check_name(&file, step_name, "a step");
            let index = self.declare_step(
                &mut file,
                step_name.get_ref(),
                step.span(),
                StepFields::of_step(step.get_ref()),
                &config,
                &authored.config,
            );
            file.steps.insert(step_name.get_ref().clone(), index);
        }
        self.hook_handlers(&mut file, &authored.hooks, &config, &authored.config);
        let top = from.is_none();
        if top {
            self.subscribers_of(&file, &authored.subscribers);
        }
        self.extensions(&mut file, name.get_ref(), top);
        if authored.flow.is_empty() {
            let span = authored.workflow.span();
            self.error(&file, span, "the workflow has no [[flow]] entries");
            self.add_help(
                "add at least one entry, e.g.\n[[flow]]\nrun = \"my-step\"\ninput = \"input\"",
            );
        }
        let mut names = Names::default();
        names.bound.insert("input".into(), 0);
        let flow = self.entries(&mut file, &authored.flow, &mut names);
        self.check_skip_targets(&file);
        self.check_unused_hooks(&file, &authored.hooks);
        let output = authored.output.as_ref().and_then(|o| {
            let value = &o.get_ref().value;
            self.expression(&file, value, &names)
        });
        self.stack.pop();
        Some(Resolved {
            source: file.source,
            name: name.into_inner(),
            flow: flow.into(),
            output,
            options,
        })
    }

    fn workflow_options(
        &mut self,
        file: &File,
        section: &authored::WorkflowSection,
    ) -> WorkflowOptions {
        let mut options = WorkflowOptions {
            idempotent: section.idempotent.unwrap_or(true),
            ..WorkflowOptions::default()
        };
        options.input_schema = section
            .input_schema
            .as_ref()
            .and_then(|p| self.schema(file, p));
        options.output_schema = section
            .output_schema
            .as_ref()
            .and_then(|p| self.schema(file, p));
        if let Some(timeout) = &section.timeout {
            options.timeout = self.positive_duration(file, timeout);
        }
        if let Some(retention) = &section.retention {
            options.retention = self.positive_duration(file, retention);
        }
        options
    }

    /// Loads and compiles a JSON Schema file named relative to the manifest.
    fn schema(&mut self, file: &File, path: &Spanned<String>) -> Option<Arc<Schema>> {
        let full = normalize(&file.dir.join(path.get_ref()));
        let text = match self.read(&full) {
            Ok(text) => text,
            Err(e) => {
                self.error(
                    file,
                    path.span(),
                    format!("cannot read the schema {}: {e}", full.display()),
                );
                self.add_help("the path is relative to the manifest's folder");
                return None;
            }
        };
        match Schema::compile(&full, &text) {
            Ok(schema) => Some(Arc::new(schema)),
            Err(e) => {
                self.error(file, path.span(), e);
                None
            }
        }
    }

    fn check_name(&mut self, file: &File, name: &Spanned<String>, what: &str) -> bool {
        let text = name.get_ref();
        let valid = !text.is_empty()
            && text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            self.error(
                file,
                name.span(),
                format!("'{text}' is not a valid name for {what}"),
            );
            self.add_help("use letters, digits, '-' and '_', starting with a letter");
        }
        valid
    }

    fn config_table(
        &mut self,
        file: &File,
        table: &IndexMap<String, Spanned<toml::Value>>,
    ) -> ConfigValues {
        let mut values = IndexMap::new();
        for (key, value) in table {
            match to_json(value.get_ref()) {
                Ok(json) => {
                    values.insert(key.clone(), json);
                }
                Err(e) => {
                    self.error(
                        file,
                        value.span(),
                        format!("config '{key}' cannot be JSON: {e}"),
                    );
                }
            }
        }
        ConfigValues::new(values)
    }

    fn build_spec(
        &self,
        file: &File,
        build: Option<&Spanned<authored::Build>>,
    ) -> Option<BuildSpec> {
        build.map(|b| match b.get_ref() {
            authored::Build::Command(command) => BuildSpec {
                command: command.clone(),
                workdir: file.dir.clone(),
                watch: Vec::new(),
            },
            authored::Build::Full(table) => BuildSpec {
                command: table.command.clone(),
                workdir: table
                    .workdir
                    .as_ref()
                    .map_or_else(|| file.dir.clone(), |w| normalize(&file.dir.join(w))),
                watch: table.watch.clone(),
            },
        })
    }

    /// A component file named relative to the manifest, checked to exist.
    fn component_path(
        &mut self,
        file: &File,
        component: &Spanned<String>,
        build: Option<&BuildSpec>,
    ) -> PathBuf {
        let path = normalize(&file.dir.join(component.get_ref()));
        if self.options.require_components && !path.is_file() {
            self.error(
                file,
                component.span(),
                format!("component file not found: {}", path.display()),
            )
            .label("no such file");
            match build {
                Some(b) => self.add_help(format!(
                    "build it with `host run --build` (it runs `{}`), or fix the path: it is relative to the manifest's folder",
                    b.command
                )),
                None => self.add_help("build the component, or fix the path: it is relative to the manifest's folder"),
            }
        }
        path
    }

    fn memory(&mut self, file: &File, memory: Option<&Spanned<String>>) -> usize {
        let Some(text) = memory else {
            return Limits::default().memory_bytes;
        };
        match parse_size(text.get_ref()) {
            Ok(bytes) if bytes <= MAX_MEMORY => bytes,
            Ok(_) => {
                self.error(file, text.span(), "a memory limit can be at most 1GiB");
                MAX_MEMORY
            }
            Err(e) => {
                self.error(file, text.span(), e);
                self.add_help("write a size like \"64MiB\" or \"512KiB\"");
                Limits::default().memory_bytes
            }
        }
    }

    /// Declares a step (a `[steps.NAME]` table or a hook handler); returns its index.
    fn declare_step(
        &mut self,
        file: &mut File,
        name: &str,
        span: Range<usize>,
        fields: StepFields<'_>,
        config: &Arc<ConfigValues>,
        config_table: &IndexMap<String, Spanned<toml::Value>>,
    ) -> usize {
        let build = self.build_spec(file, fields.build);
        let path = self.component_path(file, fields.component, build.as_ref());
        let grants = self.grants(file, name, span.clone(), fields.grants, config_table);
        let memory = self.memory(file, fields.memory);
        let base = StepPolicy {
            asynchronous: fields.is_async,
            background: fields.background,
            ..StepPolicy::default()
        };
        let policy = self.policy(
            file,
            base,
            fields.retries,
            fields.timeout,
            fields.compensate,
            fields.config,
            fields.on_permanent_failure,
        );
        let input_schema = fields.input_schema.and_then(|p| self.schema(file, p));
        let output_schema = fields.output_schema.and_then(|p| self.schema(file, p));
        let index = self.steps.len();
        self.steps.push(StepSpec {
            name: name.to_string(),
            policy,
        });
        self.components.push(ComponentSpec {
            step: format!("{}{name}", file.prefix),
            kind: StepKind::Component { path, build },
            grants,
            limits: Limits {
                memory_bytes: memory,
            },
            config: config.clone(),
            declared_at: format!(
                "{}:{}",
                file.source.display_name(),
                file.source.line_of(span.start)
            ),
            input_schema,
            output_schema,
        });
        index
    }

    /// `[[hooks.NAME]]` handlers of `file` (or of an extension read for it).
    fn hook_handlers(
        &mut self,
        file: &mut File,
        hooks: &IndexMap<Spanned<String>, Vec<Spanned<authored::Handler>>>,
        config: &Arc<ConfigValues>,
        config_table: &IndexMap<String, Spanned<toml::Value>>,
    ) {
        for (hook, handlers) in hooks {
            self.check_name(file, hook, "a hook");
            for handler in handlers {
                let h = handler.get_ref();
                let label = match &h.name {
                    Some(name) => {
                        self.check_name(file, name, "a hook handler");
                        name.get_ref().clone()
                    }
                    None => {
                        let known = file.hooks.get(hook.get_ref()).map_or(0, Vec::len);
                        format!("{}", known + 1)
                    }
                };
                let name = format!("{}.{label}", hook.get_ref());
                if file.nodes.contains(&format!("{}{name}", file.prefix)) {
                    self.error(
                        file,
                        handler.span(),
                        format!(
                            "two handlers of hook '{}' are named '{label}'",
                            hook.get_ref()
                        ),
                    );
                    self.add_help("give each handler its own `name`");
                    continue;
                }
                file.nodes.insert(format!("{}{name}", file.prefix));
                let index = self.declare_step(
                    file,
                    &name,
                    handler.span(),
                    StepFields::of_handler(h),
                    config,
                    config_table,
                );
                file.hooks
                    .entry(hook.get_ref().clone())
                    .or_default()
                    .push(index);
            }
        }
    }

    /// Finds extension manifests for workflow `name` and adds their handlers
    /// (and, for the top workflow, their subscribers).
    fn extensions(&mut self, file: &mut File, name: &str, top: bool) {
        let mut dirs = vec![file.dir.clone()];
        dirs.extend(self.options.extension_dirs.iter().map(|d| absolute(d)));
        let mut seen = HashSet::new();
        for dir in dirs {
            for path in self.options.files.tomls(&dir) {
                if path == file.source.path || !seen.insert(path.clone()) {
                    continue;
                }
                let Ok(text) = self.options.files.read(&path) else {
                    continue;
                };
                let targets_us = toml::from_str::<toml::Table>(&text)
                    .ok()
                    .is_some_and(|table| {
                        table
                            .get("extension")
                            .and_then(|e| e.get("workflow"))
                            .and_then(|w| w.as_str())
                            == Some(name)
                    });
                if targets_us {
                    self.extension(file, &path, top);
                }
            }
        }
    }

    fn extension(&mut self, file: &mut File, path: &Path, top: bool) {
        let Ok(text) = self.read(path) else { return };
        let source = Source {
            path: path.to_path_buf(),
            text: text.into(),
        };
        let authored: authored::Extension = match toml::from_str(&source.text) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(toml_error(&source, &e));
                return;
            }
        };
        // Its handlers are declared in its own file (for messages and paths).
        let mut ext = File {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            source,
            prefix: file.prefix.clone(),
            steps: IndexMap::new(),
            called: HashSet::new(),
            nodes: std::mem::take(&mut file.nodes),
            hooks: std::mem::take(&mut file.hooks),
            used_hooks: HashSet::new(),
            bound_at: Vec::new(),
            skip_targets: Vec::new(),
            extension_hooks: Vec::new(),
            workflow: file.workflow.clone(),
        };
        let config = Arc::new(self.config_table(&ext, &authored.config));
        self.hook_handlers(&mut ext, &authored.hooks, &config, &authored.config);
        if top {
            self.subscribers_of(&ext, &authored.subscribers);
        }
        // A hook the workflow does not have is a mistake in the extension,
        // reported there once the workflow's flow is known.
        let targeted: Vec<Named> = authored
            .hooks
            .keys()
            .map(|h| (h.get_ref().clone(), h.span()))
            .collect();
        file.nodes = std::mem::take(&mut ext.nodes);
        file.hooks = std::mem::take(&mut ext.hooks);
        if !targeted.is_empty() {
            file.extension_hooks.push((ext.source, targeted));
        }
    }

    fn subscribers_of(&mut self, file: &File, subscribers: &[Spanned<authored::Subscriber>]) {
        for (position, spanned) in subscribers.iter().enumerate() {
            let s = spanned.get_ref();
            let name = s.name.as_ref().map_or_else(
                || format!("subscriber-{}", position + 1),
                |n| n.get_ref().clone(),
            );
            let kind = match (&s.component, &s.command) {
                (Some(component), None) => {
                    let build = self.build_spec(file, s.build.as_ref());
                    let path = self.component_path(file, component, build.as_ref());
                    let memory = self.memory(file, s.memory.as_ref());
                    SubscriberKind::Component {
                        path,
                        build,
                        limits: Limits {
                            memory_bytes: memory,
                        },
                    }
                }
                (None, Some(command)) => SubscriberKind::Command {
                    command: command.get_ref().clone(),
                    workdir: file.dir.clone(),
                },
                _ => {
                    self.error(
                        file,
                        spanned.span(),
                        "a subscriber needs exactly one of `component` or `command`",
                    );
                    self.add_help("component = \"audit.wasm\" (world `subscriber`), or command = \"jq -c . >> events.log\" (the event on stdin)");
                    continue;
                }
            };
            let timeout = s
                .timeout
                .as_ref()
                .and_then(|t| self.positive_duration(file, t))
                .unwrap_or(SUBSCRIBER_TIMEOUT);
            self.subscribers.push(SubscriberSpec {
                name,
                kind,
                events: s.events.iter().map(|e| e.get_ref().clone()).collect(),
                timeout,
                declared_at: format!(
                    "{}:{}",
                    file.source.display_name(),
                    file.source.line_of(spanned.span().start)
                ),
            });
        }
    }

    fn grants(
        &mut self,
        file: &File,
        step: &str,
        section: Range<usize>,
        declared: Option<&Spanned<authored::Grants>>,
        config_table: &IndexMap<String, Spanned<toml::Value>>,
    ) -> Grants {
        let line = file
            .source
            .line_of(declared.map_or(section.start, |g| g.span().start));
        let mut grants = Grants {
            place: GrantPlace {
                file: file.source.display_name(),
                step: step.to_string(),
                line,
            },
            ..Grants::default()
        };
        let Some(declared) = declared else {
            return grants;
        };
        let declared = declared.get_ref();
        for entity in &declared.entities {
            let name = entity.get_ref();
            if matches!(name.as_str(), "events" | "config") {
                self.error(
                    file,
                    entity.span(),
                    format!("'{name}' is reserved for the {name} capability"),
                );
                self.add_help(format!(
                    "grant it with `{name} = ...` in `grants`, and name the collection otherwise"
                ));
            } else if self.check_name(file, entity, "an entities collection") {
                grants.entities.insert(name.clone());
            }
        }
        grants.events = declared.events;
        for key in &declared.config {
            let name = key.get_ref();
            if !config_table.contains_key(name) {
                self.error(
                    file,
                    key.span(),
                    format!("the config key '{name}' is not set in [config]"),
                );
                let hint = did_you_mean(name, config_table.keys().map(String::as_str))
                    .map(|k| format!("did you mean '{k}'? "))
                    .unwrap_or_default();
                self.add_help(format!(
                    "{hint}add it to the manifest:\n[config]\n{name} = \"...\""
                ));
            }
            grants.config.insert(name.clone());
        }
        grants
    }

    #[allow(clippy::too_many_arguments)]
    fn policy(
        &mut self,
        file: &mut File,
        mut policy: StepPolicy,
        retries: Option<&Spanned<authored::Retries>>,
        timeout: Option<&Spanned<String>>,
        compensate: Option<bool>,
        config: Option<&Spanned<toml::Value>>,
        on_failure: Option<&Spanned<String>>,
    ) -> StepPolicy {
        if let Some(retries) = retries {
            let r = retries.get_ref();
            let mut policy_retries = RetryPolicy {
                max: *r.max.get_ref(),
                ..RetryPolicy::default()
            };
            if policy_retries.max > MAX_RETRIES {
                self.error(
                    file,
                    r.max.span(),
                    format!("at most {MAX_RETRIES} retries are allowed"),
                );
            }
            if let Some(interval) = &r.interval {
                policy_retries.interval = self.duration(file, interval).unwrap_or_default();
            }
            if let Some(max_interval) = &r.max_interval {
                policy_retries.max_interval = self.duration(file, max_interval);
            }
            if let Some(backoff) = &r.backoff {
                policy_retries.backoff = match backoff.get_ref().as_str() {
                    "fixed" => Backoff::Fixed,
                    "exponential" => Backoff::Exponential,
                    other => {
                        self.error(file, backoff.span(), format!("'{other}' is not a backoff"));
                        self.add_help("use \"fixed\" or \"exponential\"");
                        Backoff::Fixed
                    }
                };
            }
            policy.retries = policy_retries;
        }
        if let Some(timeout) = timeout
            && let Some(d) = self.positive_duration(file, timeout)
        {
            policy.timeout = Some(d);
        }
        if let Some(compensate) = compensate {
            policy.compensate = compensate;
        }
        if let Some(config) = config {
            match to_json(config.get_ref()) {
                Ok(json) => policy.config = json,
                Err(e) => {
                    self.error(
                        file,
                        config.span(),
                        format!("the config cannot be JSON: {e}"),
                    );
                }
            }
        }
        if let Some(text) = on_failure {
            policy.on_permanent_failure = match text.get_ref().as_str() {
                "fail" => OnFailure::Fail,
                "continue" => OnFailure::Continue,
                "skip" => OnFailure::Skip,
                other => match other.strip_prefix("skip-to:") {
                    Some(target) if !target.trim().is_empty() => {
                        file.skip_targets
                            .push((target.trim().to_string(), text.span()));
                        OnFailure::SkipTo(target.trim().to_string())
                    }
                    _ => {
                        self.error(
                            file,
                            text.span(),
                            format!("'{other}' is not a failure policy"),
                        );
                        self.add_help("use \"fail\" (the default), \"continue\", \"skip\" or \"skip-to:NAME\" (the `as` of a later entry)");
                        OnFailure::Fail
                    }
                },
            };
        }
        policy
    }

    fn duration(&mut self, file: &File, text: &Spanned<String>) -> Option<Duration> {
        match parse_duration(text.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(file, text.span(), e);
                self.add_help("write a duration like \"100ms\", \"2s\" or \"1m\"");
                None
            }
        }
    }

    fn positive_duration(&mut self, file: &File, text: &Spanned<String>) -> Option<Duration> {
        match self.duration(file, text) {
            Some(d) if d.is_zero() => {
                self.error(file, text.span(), "this must be longer than zero");
                None
            }
            other => other,
        }
    }

    fn check_skip_targets(&mut self, file: &File) {
        for (target, span) in &file.skip_targets {
            let later = file
                .bound_at
                .iter()
                .any(|(name, at)| name == target && *at > span.start);
            if !later {
                self.error(
                    file,
                    span.clone(),
                    format!("`skip-to:{target}` names no later entry of this workflow"),
                );
                let names: Vec<&str> = file
                    .bound_at
                    .iter()
                    .filter(|(_, at)| *at > span.start)
                    .map(|(n, _)| n.as_str())
                    .collect();
                self.add_help(if names.is_empty() {
                    "no entry after this one has an `as` name".to_string()
                } else {
                    format!("the `as` names of later entries: {}", names.join(", "))
                });
            }
        }
    }

    fn check_unused_hooks(
        &mut self,
        file: &File,
        hooks: &IndexMap<Spanned<String>, Vec<Spanned<authored::Handler>>>,
    ) {
        for hook in hooks.keys() {
            if !file.used_hooks.contains(hook.get_ref()) {
                self.error(
                    file,
                    hook.span(),
                    format!(
                        "handlers are declared for hook '{}', but the flow has no such hook",
                        hook.get_ref()
                    ),
                );
                self.add_help(format!(
                    "add an entry `hook = \"{}\"` to the flow, or fix the name",
                    hook.get_ref()
                ));
            }
        }
        for (source, hooks) in &file.extension_hooks {
            for (hook, span) in hooks {
                if !file.used_hooks.contains(hook) {
                    self.errors.push(ManifestError::at(
                        source,
                        span.clone(),
                        format!("the workflow '{}' has no hook '{hook}'", file.workflow),
                    ));
                    let available: Vec<&str> = file.used_hooks.iter().map(String::as_str).collect();
                    self.add_help(if available.is_empty() {
                        "that workflow's flow has no `hook` entries".to_string()
                    } else {
                        format!("its hooks: {}", available.join(", "))
                    });
                }
            }
        }
    }

    fn entries(
        &mut self,
        file: &mut File,
        list: &[Spanned<authored::Entry>],
        names: &mut Names,
    ) -> Vec<Entry> {
        list.iter()
            .filter_map(|entry| self.entry(file, entry, names))
            .collect()
    }

    fn entry(
        &mut self,
        file: &mut File,
        spanned: &Spanned<authored::Entry>,
        names: &mut Names,
    ) -> Option<Entry> {
        let entry = spanned.get_ref();
        let set = [
            entry.run.is_some() && entry.for_each.is_none(),
            entry.parallel.is_some(),
            entry.when.is_some(),
            entry.transform.is_some(),
            entry.workflow.is_some(),
            entry.hook.is_some(),
            entry.query.is_some(),
            entry.for_each.is_some(),
        ];
        let kinds: Vec<&str> = set
            .iter()
            .zip(ENTRY_KINDS)
            .filter(|(on, _)| **on)
            .map(|(_, kind)| kind)
            .collect();
        let span = spanned.span();
        match kinds.as_slice() {
            [] => {
                self.error(file, span, "this flow entry does not say what to do");
                self.add_help("give it one of `run = \"step\"`, `parallel = [...]`, `when = \"...\"` with `then`, `transform = \"...\"` with `as`, `workflow = \"file.toml\"`, `hook = \"name\"`, `query = {...}` or `for-each = \"...\"` with `run`");
                return None;
            }
            [_] => {}
            [first, second, ..] => {
                self.error(
                    file,
                    span,
                    format!(
                        "a flow entry is one thing, but this one has both `{first}` and `{second}`"
                    ),
                );
                if kinds.contains(&"when") {
                    self.add_help(
                        "put what runs under the condition in `then = [{ run = \"...\" }]`",
                    );
                } else {
                    self.add_help("split it into two [[flow]] entries");
                }
                return None;
            }
        }
        if entry.then.is_some() && entry.when.is_none() {
            self.error(file, span.clone(), "`then` belongs to a `when` entry");
        }
        if entry.concurrency.is_some() && entry.for_each.is_none() {
            self.error(
                file,
                span.clone(),
                "`concurrency` belongs to a `for-each` entry",
            );
        }
        self.reject_misplaced(file, entry, kinds[0], span.clone());
        if let Some(bind) = &entry.bind {
            file.bound_at.push((bind.get_ref().clone(), span.start));
        }
        match kinds[0] {
            "run" => self.run_entry(file, entry, entry.run.as_ref()?, names),
            "parallel" => self.parallel(file, entry.parallel.as_ref()?, names),
            "when" => self.when(file, entry, entry.when.as_ref()?, span, names),
            "transform" => {
                let expr = entry.transform.as_ref()?;
                let Some(bind) = &entry.bind else {
                    self.error(
                        file,
                        expr.span(),
                        "a `transform` needs `as`, the name to bind its value to",
                    );
                    return None;
                };
                let expr = self.expression(file, expr, names);
                let bind = self.bind(file, bind, names)?;
                Some(Entry::Transform { expr: expr?, bind })
            }
            "workflow" => self.nested(file, entry, entry.workflow.as_ref()?, names),
            "hook" => self.hook(file, entry, entry.hook.as_ref()?, names),
            "query" => self.query(file, entry, entry.query.as_ref()?, names),
            "for-each" => self.for_each(file, entry, entry.for_each.as_ref()?, names),
            _ => None,
        }
    }

    /// Keys that do not apply to an entry of this kind.
    fn reject_misplaced(
        &mut self,
        file: &File,
        entry: &authored::Entry,
        kind: &str,
        span: Range<usize>,
    ) {
        let calls_a_step = matches!(kind, "run" | "for-each");
        let takes_input = calls_a_step || matches!(kind, "workflow" | "hook");
        let takes_as = takes_input || matches!(kind, "transform" | "query");
        let misplaced = [
            ("input", entry.input.is_some() && !takes_input),
            ("as", entry.bind.is_some() && !takes_as),
            ("retries", entry.retries.is_some() && !calls_a_step),
            ("timeout", entry.timeout.is_some() && !calls_a_step),
            ("compensate", entry.compensate.is_some() && !calls_a_step),
            ("config", entry.config.is_some() && !calls_a_step),
            (
                "on-permanent-failure",
                entry.on_permanent_failure.is_some() && !calls_a_step,
            ),
        ];
        for (key, wrong) in misplaced {
            if wrong {
                self.error(
                    file,
                    span.clone(),
                    format!("`{key}` does not apply to a `{kind}` entry"),
                );
                self.add_help("move it onto the entry or step it belongs to, or remove it");
            }
        }
    }

    /// The step a `run` names, or an error with suggestions.
    fn step_index(&mut self, file: &File, step: &Spanned<String>) -> Option<usize> {
        let step_name = step.get_ref();
        if let Some(&index) = file.steps.get(step_name) {
            return Some(index);
        }
        self.error(file, step.span(), format!("unknown step '{step_name}'"))
            .label("not declared");
        let declared: Vec<&str> = file.steps.keys().map(String::as_str).collect();
        let help = match did_you_mean(step_name, declared.iter().copied()) {
            Some(near) => format!("did you mean '{near}'? Steps are declared as [steps.NAME]"),
            None if declared.is_empty() => format!(
                "declare it:\n[steps.{step_name}]\ncomponent = \"path/to/{step_name}.wasm\""
            ),
            None => format!(
                "declared steps: {}; or declare it as [steps.{step_name}]",
                declared.join(", ")
            ),
        };
        self.add_help(help);
        None
    }

    /// The call name of a `run` of `step`: the step name the first time, the
    /// entry's `as` afterwards.
    fn node_name(
        &mut self,
        file: &mut File,
        step: &Spanned<String>,
        bind: Option<&Spanned<String>>,
    ) -> Option<String> {
        let step_name = step.get_ref();
        let node = if file.called.insert(step_name.clone()) {
            format!("{}{step_name}", file.prefix)
        } else if let Some(bind) = bind {
            format!("{}{}", file.prefix, bind.get_ref())
        } else {
            self.error(file, step.span(), format!("step '{step_name}' runs more than once; give this entry an `as` name to tell the calls apart"));
            return None;
        };
        if !file.nodes.insert(node.clone()) {
            self.error(file, step.span(), format!("two calls are named '{node}'"));
            self.add_help("give one of them a different `as` name");
        }
        Some(node)
    }

    fn entry_policy(
        &mut self,
        file: &mut File,
        index: usize,
        entry: &authored::Entry,
    ) -> StepPolicy {
        let base = self.steps[index].policy.clone();
        self.policy(
            file,
            base,
            entry.retries.as_ref(),
            entry.timeout.as_ref(),
            entry.compensate,
            entry.config.as_ref(),
            entry.on_permanent_failure.as_ref(),
        )
    }

    fn run_entry(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        step: &Spanned<String>,
        names: &mut Names,
    ) -> Option<Entry> {
        let index = self.step_index(file, step)?;
        let input = match &entry.input {
            Some(expr) => Some(self.expression(file, expr, names)?),
            None => None,
        };
        let node = self.node_name(file, step, entry.bind.as_ref())?;
        let policy = self.entry_policy(file, index, entry);
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::Run(Call {
            step: index,
            node,
            input,
            bind,
            policy,
        }))
    }

    fn for_each(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        items: &Spanned<String>,
        names: &mut Names,
    ) -> Option<Entry> {
        let Some(step) = &entry.run else {
            self.error(
                file,
                items.span(),
                "a `for-each` needs `run`, the step to call for each item",
            );
            self.add_help("e.g. for-each = \"input.products\"\nrun = \"create-product\"\ninput = \"{'brand_id': brand.id, 'product': item}\"");
            return None;
        };
        let items = self.expression(file, items, names);
        let index = self.step_index(file, step)?;
        // The input sees the item and its position.
        let mut item_names = names.clone();
        item_names.bound.insert("item".into(), 0);
        item_names.bound.insert("index".into(), 0);
        let input = match &entry.input {
            Some(expr) => Some(self.expression(file, expr, &item_names)?),
            None => Some(Expr::compile("item").expect("a name compiles")),
        };
        let concurrency = match &entry.concurrency {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_CONCURRENCY => {
                self.error(
                    file,
                    n.span(),
                    format!("`concurrency` must be between 1 and {MAX_CONCURRENCY}"),
                );
                1
            }
            Some(n) => *n.get_ref() as usize,
            None => 1,
        };
        let node = self.node_name(file, step, entry.bind.as_ref())?;
        let policy = self.entry_policy(file, index, entry);
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::ForEach {
            items: items?,
            call: Arc::new(Call {
                step: index,
                node,
                input,
                bind,
                policy,
            }),
            concurrency,
        })
    }

    fn hook(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        hook: &Spanned<String>,
        names: &mut Names,
    ) -> Option<Entry> {
        let name = hook.get_ref().clone();
        self.check_name(file, hook, "a hook");
        if !file.used_hooks.insert(name.clone()) {
            self.error(
                file,
                hook.span(),
                format!("the hook '{name}' appears twice in the flow"),
            );
            self.add_help("a hook is one extension point; give the second one another name");
        }
        let input = match &entry.input {
            Some(expr) => Some(self.expression(file, expr, names)?),
            None => None,
        };
        let handlers = file
            .hooks
            .get(&name)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|index| Call {
                step: index,
                node: format!("{}{}", file.prefix, self.steps[index].name),
                input: None,
                bind: None,
                policy: self.steps[index].policy.clone(),
            })
            .collect();
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::Hook {
            name,
            input,
            handlers,
            bind,
        })
    }

    fn query(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        query: &Spanned<authored::Query>,
        names: &mut Names,
    ) -> Option<Entry> {
        let q = query.get_ref();
        let Some(bind) = &entry.bind else {
            self.error(
                file,
                query.span(),
                "a `query` needs `as`, the name to bind the entities to",
            );
            return None;
        };
        self.check_name(file, &q.entity, "an entities collection");
        let input = match &q.filters {
            Some(filters) => Some(self.expression(file, filters, names)?),
            None => None,
        };
        let node = format!("{}{}", file.prefix, bind.get_ref());
        if !file.nodes.insert(node.clone()) {
            self.error(file, bind.span(), format!("two calls are named '{node}'"));
        }
        let index = self.steps.len();
        self.steps.push(StepSpec {
            name: bind.get_ref().clone(),
            policy: StepPolicy {
                compensate: false,
                ..StepPolicy::default()
            },
        });
        self.components.push(ComponentSpec {
            step: node.clone(),
            kind: StepKind::Query(QuerySpec {
                entity: q.entity.get_ref().clone(),
                fields: q.fields.clone(),
                limit: q.limit,
                with_deleted: q.with_deleted,
            }),
            grants: Grants::default(),
            limits: Limits::default(),
            config: Arc::new(ConfigValues::default()),
            declared_at: format!(
                "{}:{}",
                file.source.display_name(),
                file.source.line_of(query.span().start)
            ),
            input_schema: None,
            output_schema: None,
        });
        let bind = self.bind(file, bind, names)?;
        Some(Entry::Run(Call {
            step: index,
            node,
            input: input.or_else(|| Some(Expr::compile("null").expect("null compiles"))),
            bind: Some(bind),
            policy: self.steps[index].policy.clone(),
        }))
    }

    fn parallel(
        &mut self,
        file: &mut File,
        branches: &Spanned<Vec<Spanned<authored::Entry>>>,
        names: &mut Names,
    ) -> Option<Entry> {
        if branches.get_ref().is_empty() {
            self.error(file, branches.span(), "`parallel` needs at least one entry");
            return None;
        }
        // Siblings run at once: none sees the names another binds.
        let mut resolved = Vec::new();
        let mut new_names: Vec<(String, usize)> = Vec::new();
        for branch in branches.get_ref() {
            let mut branch_names = names.clone();
            if let Some(e) = self.entry(file, branch, &mut branch_names) {
                resolved.push(e);
            }
            for (name, line) in branch_names.bound {
                if !names.bound.contains_key(&name) {
                    if new_names.iter().any(|(n, _)| *n == name) {
                        self.error(
                            file,
                            branch.span(),
                            format!("two parallel entries bind '{name}'"),
                        );
                    }
                    new_names.push((name, line));
                }
            }
        }
        names.bound.extend(new_names);
        Some(Entry::Parallel(resolved.into()))
    }

    fn when(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        condition: &Spanned<String>,
        span: Range<usize>,
        names: &mut Names,
    ) -> Option<Entry> {
        let expr = self.expression(file, condition, names);
        let Some(then) = &entry.then else {
            self.error(
                file,
                span,
                "a `when` entry needs `then`, the entries to run when the condition holds",
            );
            self.add_help("e.g. then = [{ run = \"my-step\", input = \"input\" }]");
            return None;
        };
        let mut inner = names.clone();
        let entries = self.entries(file, then.get_ref(), &mut inner);
        let binds: Vec<String> = inner
            .bound
            .iter()
            .filter(|(name, _)| !names.bound.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        names.bound = inner.bound;
        Some(Entry::When {
            condition: expr?,
            then: entries.into(),
            binds,
        })
    }

    fn nested(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        path: &Spanned<String>,
        names: &mut Names,
    ) -> Option<Entry> {
        let child_path = absolute(&file.dir.join(path.get_ref()));
        if let Some(position) = self.stack.iter().position(|p| *p == child_path) {
            let chain: Vec<String> = self.stack[position..]
                .iter()
                .chain(std::iter::once(&child_path))
                .map(|p| {
                    p.file_name().map_or_else(
                        || p.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            self.error(
                file,
                path.span(),
                format!("nested workflows form a cycle: {}", chain.join(" → ")),
            )
            .label("nests a workflow that is already running here");
            self.add_help("a workflow cannot contain itself; remove one of the `workflow` entries in the cycle");
            return None;
        }
        let input = match &entry.input {
            Some(expr) => Some(self.expression(file, expr, names)?),
            None => None,
        };
        let label = entry.bind.as_ref().map_or_else(
            || {
                child_path
                    .file_stem()
                    .map_or_else(|| "workflow".into(), |s| s.to_string_lossy().into_owned())
            },
            |b| b.get_ref().clone(),
        );
        let prefix = format!("{}{label}/", file.prefix);
        let child = self.file(&child_path, &prefix, Some((file, path.span())))?;
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::Nested {
            name: child.name,
            flow: child.flow,
            output: child.output,
            input,
            bind,
        })
    }

    fn bind(&mut self, file: &File, bind: &Spanned<String>, names: &mut Names) -> Option<String> {
        let name = bind.get_ref();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                file,
                bind.span(),
                format!("'{name}' cannot be used as a name in expressions"),
            );
            self.add_help(
                "use letters, digits and '_' (no '-'), starting with a letter; e.g. as = \"brand\"",
            );
            return None;
        }
        if let Some(line) = names.bound.get(name) {
            let message = if name == "input" {
                "'input' is the workflow input and cannot be rebound".to_string()
            } else {
                format!("'{name}' is already bound (line {line})")
            };
            self.error(file, bind.span(), message);
            self.add_help("pick another name");
            return None;
        }
        names
            .bound
            .insert(name.clone(), file.source.line_of(bind.span().start));
        Some(name.clone())
    }

    /// Compiles an expression and checks that it only reads names bound before it.
    fn expression(&mut self, file: &File, text: &Spanned<String>, names: &Names) -> Option<Expr> {
        // The span includes the TOML quotes; a CEL offset counts from after them
        // (three of them for a multi-line string).
        let quote = if file.source.text[text.span()].starts_with("\"\"\"") {
            3
        } else {
            1
        };
        let inner_start = text.span().start + quote;
        let expr = match Expr::compile(text.get_ref()) {
            Ok(expr) => expr,
            Err(e) => {
                let at = e
                    .offset
                    .map_or(text.span(), |o| inner_start + o..inner_start + o + 1);
                self.error(file, at, format!("invalid expression: {}", e.message));
                self.add_help("expressions are CEL, e.g. \"input.brand\", \"{'id': brand.id}\" or \"!has(brand.logo_url)\"");
                return None;
            }
        };
        let mut ok = true;
        for variable in expr.variables() {
            if names.bound.contains_key(variable) {
                continue;
            }
            ok = false;
            let position = text
                .get_ref()
                .find(variable.as_str())
                .map_or(text.span(), |o| {
                    inner_start + o..inner_start + o + variable.len()
                });
            self.error(
                file,
                position,
                format!("unknown name '{variable}' in this expression"),
            )
            .label("not bound here");
            let in_scope: Vec<&str> = names.bound.keys().map(String::as_str).collect();
            let hint = did_you_mean(variable, in_scope.iter().copied())
                .map(|near| format!("did you mean '{near}'? "))
                .unwrap_or_default();
            self.add_help(format!(
                "{hint}names bound at this point: {} (an entry's `as` name is visible to the entries after it)",
                in_scope.join(", ")
            ));
        }
        ok.then_some(expr)
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
