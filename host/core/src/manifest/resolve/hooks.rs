//! What extends or watches a workflow: `[[hooks.NAME]]` handlers, extension
//! manifests, `[[subscribers]]`, and `hook` flow entries.

use super::*;

impl Resolver<'_> {
    /// `[[hooks.NAME]]` handlers of `file` (or of an extension read for it).
    pub(super) fn hook_handlers(
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
    pub(super) fn extensions(&mut self, file: &mut File, name: &str, top: bool) {
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

    pub(super) fn extension(&mut self, file: &mut File, path: &Path, top: bool) {
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
            // Its handlers may be granted the workflow's secrets.
            secrets: file.secrets.clone(),
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

    pub(super) fn subscribers_of(
        &mut self,
        file: &File,
        subscribers: &[Spanned<authored::Subscriber>],
    ) {
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

    pub(super) fn check_unused_hooks(
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

    pub(super) fn hook(
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
}
