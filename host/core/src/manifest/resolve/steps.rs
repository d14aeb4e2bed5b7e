//! Step declarations (`[steps.NAME]` and hook handlers): names, components
//! and their build commands, memory, grants (through the capabilities'
//! registry), retry, timeout and failure policies.

use super::*;

impl Resolver<'_> {
    pub(super) fn check_name(&mut self, file: &File, name: &Spanned<String>, what: &str) -> bool {
        match name_problem(name.get_ref(), what) {
            Some((message, help)) => {
                self.error(file, name.span(), message);
                self.add_help(help);
                false
            }
            None => true,
        }
    }

    pub(super) fn config_table(
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

    pub(super) fn build_spec(
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
    pub(super) fn component_path(
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
                format!("component file not found: {}", display_path(&path)),
            )
            .label("no such file");
            match build {
                Some(b) => self.add_help(format!(
                    "build it with `--build` (`host run --build`, `host serve --build`; it runs `{}`), or fix the path: it is relative to the manifest's folder",
                    b.command
                )),
                None => self.add_help("build the component, or fix the path: it is relative to the manifest's folder"),
            }
        }
        path
    }

    pub(super) fn memory(&mut self, file: &File, memory: Option<&Spanned<String>>) -> usize {
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
    pub(super) fn declare_step(
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

    /// Each `grants` key is read by the parser its capability registered;
    /// an unknown key is an error with the capabilities there are.
    pub(super) fn grants(
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
        let registry = &self.options.grants;
        let mut grants = registry.none(GrantPlace {
            file: file.source.display_name(),
            step: step.to_string(),
            line,
        });
        let Some(declared) = declared else {
            return grants;
        };
        let config_keys: Vec<&str> = config_table.keys().map(String::as_str).collect();
        for (key, value) in declared.get_ref() {
            let Some(parser) = registry.parser(key.get_ref()) else {
                self.error(
                    file,
                    key.span(),
                    format!("unknown capability '{}' in grants", key.get_ref()),
                )
                .label("unknown key");
                let hint = did_you_mean(key.get_ref(), registry.keys())
                    .map(|k| format!("did you mean '{k}'? "))
                    .unwrap_or_default();
                let known: Vec<&str> = registry.keys().collect();
                self.add_help(format!("{hint}the capabilities are: {}", known.join(", ")));
                continue;
            };
            let span = value.span();
            let secrets: Vec<&str> = file.secrets.iter().map(String::as_str).collect();
            let entry = GrantEntry::new(&file.source.text[span.clone()], span.start, &config_keys)
                .with_secrets(&secrets);
            let mut problems = GrantProblems::default();
            let grant = parser.parse(&entry, &mut problems);
            for problem in problems.items {
                self.error(file, problem.span, problem.message);
                if let Some(help) = problem.help {
                    self.add_help(help);
                }
            }
            if let Some(grant) = grant {
                grants.insert(parser.key(), grant);
            }
        }
        grants
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn policy(
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

    pub(super) fn duration(&mut self, file: &File, text: &Spanned<String>) -> Option<Duration> {
        match parse_duration(text.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(file, text.span(), e);
                self.add_help("write a duration like \"100ms\", \"2s\" or \"1m\"");
                None
            }
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        file: &File,
        text: &Spanned<String>,
    ) -> Option<Duration> {
        match self.duration(file, text) {
            Some(d) if d.is_zero() => {
                self.error(file, text.span(), "this must be longer than zero");
                None
            }
            other => other,
        }
    }

    pub(super) fn check_skip_targets(&mut self, file: &File) {
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
}
