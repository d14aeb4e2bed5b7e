//! Reading one manifest file: its TOML, its `[workflow]` options and the
//! JSON Schemas it names. The file's steps, flow and hooks are resolved by
//! the sibling modules.

use super::*;

impl Resolver<'_> {
    /// Resolves one workflow manifest (the top one, or a nested one at `from`).
    pub(super) fn file(
        &mut self,
        path: &Path,
        prefix: &str,
        from: Option<(&File, Range<usize>)>,
    ) -> Option<Resolved> {
        let path = absolute(path);
        let text = match self.read(&path) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read the manifest {}: {e}", display_path(&path));
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
            secrets: Vec::new(),
        };
        let section = authored.workflow.get_ref();
        let name = section.name.clone();
        self.check_name(&file, &name, "a workflow name");
        let options = self.workflow_options(&file, section);
        let config = Arc::new(self.config_table(&file, &authored.config));
        self.secrets_table(&mut file, &authored.secrets);
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

    pub(super) fn workflow_options(
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
        if let Some(concurrency) = &section.concurrency {
            options.concurrency = self.concurrency(file, concurrency);
        }
        if let Some(schedule) = &section.schedule {
            let input_schema = options.input_schema.clone();
            options.schedule = self.schedule(file, schedule, input_schema.as_deref());
            if let (Some(resolved), Some(concurrency)) = (&options.schedule, &options.concurrency) {
                self.check_scheduled_queue(file, schedule, resolved, concurrency);
            }
        }
        options
    }

    /// Loads and compiles a JSON Schema file named relative to the manifest.
    pub(super) fn schema(&mut self, file: &File, path: &Spanned<String>) -> Option<Arc<Schema>> {
        let full = normalize(&file.dir.join(path.get_ref()));
        let text = match self.read(&full) {
            Ok(text) => text,
            Err(e) => {
                self.error(
                    file,
                    path.span(),
                    format!("cannot read the schema {}: {e}", display_path(&full)),
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
}
