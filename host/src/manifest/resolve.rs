//! Turns authored manifests into the plan: checks names, expressions, scopes,
//! options and files; flattens nested workflows; collects every problem.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use toml::Spanned;

use super::authored;
use super::error::{ManifestError, ManifestErrors, Source, did_you_mean};
use super::units::{parse_duration, parse_size};
use super::{BuildSpec, ComponentSpec, LoadOptions, Manifest};
use crate::capabilities::grants::GrantPlace;
use crate::capabilities::{ConfigValues, Grants};
use crate::expr::Expr;
use crate::json::Json;
use crate::saga::{Backoff, Call, Entry, RetryPolicy, StepPolicy, StepSpec, Workflow};
use crate::wasm::Limits;

/// The most retries a manifest may ask for.
const MAX_RETRIES: u32 = 100;
/// The largest memory limit a step may ask for.
const MAX_MEMORY: usize = 1 << 30;

/// The kinds a flow entry can be: exactly one per entry.
const ENTRY_KINDS: [&str; 5] = ["run", "parallel", "when", "transform", "workflow"];

pub fn load(path: &Path, options: &LoadOptions) -> Result<Manifest, ManifestErrors> {
    let mut resolver = Resolver {
        options,
        errors: ManifestErrors::default(),
        steps: Vec::new(),
        components: Vec::new(),
        stack: Vec::new(),
        files: Vec::new(),
    };
    let resolved = resolver.file(path, "", None);
    if !resolver.errors.is_empty() {
        return Err(resolver.errors);
    }
    let (source, name, flow, output) = resolved.expect("a file without errors resolves");
    Ok(Manifest {
        source,
        workflow: Arc::new(Workflow {
            name,
            steps: resolver.steps,
            flow,
            output,
        }),
        components: resolver.components,
        files: resolver.files,
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
    files: Vec<PathBuf>,
}

/// One manifest file being resolved.
struct File {
    source: Source,
    dir: PathBuf,
    /// Prefix of call names (`child/` inside a nested workflow).
    prefix: String,
    /// Step name → global index and its declared policy.
    steps: IndexMap<String, usize>,
    /// Steps already called once in this file.
    called: HashSet<String>,
    /// Call names used in this file.
    nodes: HashSet<String>,
}

/// The names visible at a point of the flow, with the line that bound them.
#[derive(Clone, Default)]
struct Names {
    bound: IndexMap<String, usize>,
}

type Resolved = (Source, String, Arc<[Entry]>, Option<Expr>);

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

    /// Resolves one manifest file (the top one, or a nested one at `from`).
    fn file(
        &mut self,
        path: &Path,
        prefix: &str,
        from: Option<(&File, Range<usize>)>,
    ) -> Option<Resolved> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let text = match std::fs::read_to_string(&path) {
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
        self.files.push(path.clone());
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
        };
        let name = authored.workflow.get_ref().name.clone();
        self.check_name(&file, &name, "a workflow name");
        let config = Arc::new(self.config_table(&file, &authored.config));
        for (step_name, step) in &authored.steps {
            self.step(&mut file, step_name, step, &config, &authored.config);
        }
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
        let output = authored.output.as_ref().and_then(|o| {
            let value = &o.get_ref().value;
            self.expression(&file, value, &names)
        });
        self.stack.pop();
        Some((file.source, name.into_inner(), flow.into(), output))
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

    fn step(
        &mut self,
        file: &mut File,
        name: &Spanned<String>,
        section: &Spanned<authored::StepSection>,
        config: &Arc<ConfigValues>,
        config_table: &IndexMap<String, Spanned<toml::Value>>,
    ) {
        self.check_name(file, name, "a step");
        let step = section.get_ref();
        let component = step.component.get_ref();
        let path = normalize(&file.dir.join(component));
        let build = step.build.as_ref().map(|b| match b.get_ref() {
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
                    .map_or_else(|| file.dir.clone(), |w| file.dir.join(w)),
                watch: table.watch.clone(),
            },
        });
        if self.options.require_components && !path.is_file() {
            self.error(
                file,
                step.component.span(),
                format!("component file not found: {}", path.display()),
            )
            .label("no such file");
            match &build {
                Some(b) => self.add_help(format!(
                    "build it with `host run --build` (it runs `{}`), or fix the path: it is relative to the manifest's folder",
                    b.command
                )),
                None => self.add_help("build the component, or fix the path: it is relative to the manifest's folder"),
            }
        }
        let grants = self.grants(file, name.get_ref(), section, config_table);
        let memory = match &step.memory {
            None => Limits::default().memory_bytes,
            Some(text) => match parse_size(text.get_ref()) {
                Ok(bytes) if bytes <= MAX_MEMORY => bytes,
                Ok(_) => {
                    self.error(
                        file,
                        text.span(),
                        "a step's memory limit can be at most 1GiB",
                    );
                    MAX_MEMORY
                }
                Err(e) => {
                    self.error(file, text.span(), e);
                    self.add_help("write a size like \"64MiB\" or \"512KiB\"");
                    Limits::default().memory_bytes
                }
            },
        };
        let policy = self.policy(
            file,
            StepPolicy::default(),
            step.retries.as_ref(),
            step.timeout.as_ref(),
            step.compensate,
            step.config.as_ref(),
        );
        let index = self.steps.len();
        self.steps.push(StepSpec {
            name: name.get_ref().clone(),
            policy,
        });
        self.components.push(ComponentSpec {
            step: format!("{}{}", file.prefix, name.get_ref()),
            path,
            build,
            grants,
            limits: Limits {
                memory_bytes: memory,
            },
            config: config.clone(),
            declared_at: format!(
                "{}:{}",
                file.source.display_name(),
                file.source.line_of(section.span().start)
            ),
        });
        file.steps.insert(name.get_ref().clone(), index);
    }

    fn grants(
        &mut self,
        file: &File,
        step: &str,
        section: &Spanned<authored::StepSection>,
        config_table: &IndexMap<String, Spanned<toml::Value>>,
    ) -> Grants {
        let declared = section.get_ref().grants.as_ref();
        let line = file
            .source
            .line_of(declared.map_or(section.span().start, |g| g.span().start));
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

    fn policy(
        &mut self,
        file: &File,
        mut policy: StepPolicy,
        retries: Option<&Spanned<authored::Retries>>,
        timeout: Option<&Spanned<String>>,
        compensate: Option<bool>,
        config: Option<&Spanned<toml::Value>>,
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
        if let Some(timeout) = timeout {
            match self.duration(file, timeout) {
                Some(d) if d.is_zero() => {
                    self.error(file, timeout.span(), "a timeout must be longer than zero");
                }
                Some(d) => policy.timeout = Some(d),
                None => {}
            }
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
        policy
    }

    fn duration(&mut self, file: &File, text: &Spanned<String>) -> Option<std::time::Duration> {
        match parse_duration(text.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(file, text.span(), e);
                self.add_help("write a duration like \"100ms\", \"2s\" or \"1m\"");
                None
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
        let kinds: Vec<&str> = [
            entry.run.is_some(),
            entry.parallel.is_some(),
            entry.when.is_some(),
            entry.transform.is_some(),
            entry.workflow.is_some(),
        ]
        .iter()
        .zip(ENTRY_KINDS)
        .filter(|(set, _)| **set)
        .map(|(_, kind)| kind)
        .collect();
        let span = spanned.span();
        match kinds.as_slice() {
            [] => {
                self.error(file, span, "this flow entry does not say what to do");
                self.add_help("give it one of `run = \"step\"`, `parallel = [...]`, `when = \"...\"` with `then`, `transform = \"...\"` with `as`, or `workflow = \"file.toml\"`");
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
        let is_call = entry.run.is_some() || entry.workflow.is_some();
        if !is_call {
            self.reject_call_options(file, entry, span.clone());
        }
        if let Some(step) = &entry.run {
            return self.run_entry(file, entry, step, names);
        }
        if let Some(branches) = &entry.parallel {
            return self.parallel(file, entry, branches, names);
        }
        if let Some(condition) = &entry.when {
            return self.when(file, entry, condition, span, names);
        }
        if let Some(expr) = &entry.transform {
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
            return Some(Entry::Transform { expr: expr?, bind });
        }
        if let Some(path) = &entry.workflow {
            return self.nested(file, entry, path, names);
        }
        None
    }

    /// `input`, `as` and step options only make sense on `run` and `workflow`.
    fn reject_call_options(&mut self, file: &File, entry: &authored::Entry, span: Range<usize>) {
        let transform = entry.transform.is_some();
        let misplaced = [
            ("input", entry.input.is_some()),
            ("as", entry.bind.is_some() && !transform),
            ("retries", entry.retries.is_some()),
            ("timeout", entry.timeout.is_some()),
            ("compensate", entry.compensate.is_some()),
            ("config", entry.config.is_some()),
        ];
        for (key, set) in misplaced {
            if set {
                self.error(
                    file,
                    span.clone(),
                    format!("`{key}` only applies to `run` and `workflow` entries"),
                );
                self.add_help("move it onto the entries inside, or remove it");
            }
        }
    }

    fn run_entry(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        step: &Spanned<String>,
        names: &mut Names,
    ) -> Option<Entry> {
        let step_name = step.get_ref();
        let Some(&index) = file.steps.get(step_name) else {
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
            return None;
        };
        let input = match &entry.input {
            Some(expr) => Some(self.expression(file, expr, names)?),
            None => None,
        };
        let node = if file.called.insert(step_name.clone()) {
            format!("{}{step_name}", file.prefix)
        } else if let Some(bind) = &entry.bind {
            format!("{}{}", file.prefix, bind.get_ref())
        } else {
            self.error(file, step.span(), format!("step '{step_name}' runs more than once; give this entry an `as` name to tell the calls apart"));
            return None;
        };
        if !file.nodes.insert(node.clone()) {
            self.error(file, step.span(), format!("two calls are named '{node}'"));
            self.add_help("give one of them a different `as` name");
        }
        let policy = self.policy(
            file,
            self.steps[index].policy.clone(),
            entry.retries.as_ref(),
            entry.timeout.as_ref(),
            entry.compensate,
            entry.config.as_ref(),
        );
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

    fn parallel(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        branches: &Spanned<Vec<Spanned<authored::Entry>>>,
        names: &mut Names,
    ) -> Option<Entry> {
        let _ = entry;
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
        let child_path = file.dir.join(path.get_ref());
        let canonical = child_path
            .canonicalize()
            .unwrap_or_else(|_| child_path.clone());
        if let Some(position) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[position..]
                .iter()
                .chain(std::iter::once(&canonical))
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
                canonical
                    .file_stem()
                    .map_or_else(|| "workflow".into(), |s| s.to_string_lossy().into_owned())
            },
            |b| b.get_ref().clone(),
        );
        let prefix = format!("{}{label}/", file.prefix);
        if entry.retries.is_some()
            || entry.timeout.is_some()
            || entry.compensate.is_some()
            || entry.config.is_some()
        {
            self.error(
                file,
                path.span(),
                "step options do not apply to a nested workflow",
            );
            self.add_help("set them on the steps of the nested workflow");
        }
        let (_, name, flow, output) = self.file(&child_path, &prefix, Some((file, path.span())))?;
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::Nested {
            name,
            flow,
            output,
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
        // The span includes the TOML quotes; a CEL offset counts from after them.
        let inner_start = text.span().start + 1;
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
