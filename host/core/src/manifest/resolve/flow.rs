//! The `[[flow]]` entries: one of run, parallel, when, transform, workflow
//! (nested), hook, query or for-each each, with their options.

use super::*;

impl Resolver<'_> {
    pub(super) fn entries(
        &mut self,
        file: &mut File,
        list: &[Spanned<authored::Entry>],
        names: &mut Names,
    ) -> Vec<Entry> {
        list.iter()
            .filter_map(|entry| self.entry(file, entry, names))
            .collect()
    }

    pub(super) fn entry(
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
            entry.sleep.is_some(),
            entry.sleep_until.is_some(),
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
                self.add_help("give it one of `run = \"step\"`, `parallel = [...]`, `when = \"...\"` with `then`, `transform = \"...\"` with `as`, `workflow = \"file.toml\"`, `hook = \"name\"`, `query = {...}`, `for-each = \"...\"` with `run`, `sleep = \"2h\"` or `sleep-until = \"<CEL time>\"`");
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
            "sleep" | "sleep-until" => self.sleep(file, entry, span, names),
            _ => None,
        }
    }

    /// Keys that do not apply to an entry of this kind.
    pub(super) fn reject_misplaced(
        &mut self,
        file: &File,
        entry: &authored::Entry,
        kind: &str,
        span: Range<usize>,
    ) {
        let calls_a_step = matches!(kind, "run" | "for-each");
        let takes_input = calls_a_step || matches!(kind, "workflow" | "hook");
        let takes_as =
            takes_input || matches!(kind, "transform" | "query" | "sleep" | "sleep-until");
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

    /// A `sleep = "2h"` or `sleep-until = "<CEL>"` entry, named `sleep` or
    /// by its `as` (which binds `{"until": "<RFC 3339>"}`).
    pub(super) fn sleep(
        &mut self,
        file: &mut File,
        entry: &authored::Entry,
        span: Range<usize>,
        names: &mut Names,
    ) -> Option<Entry> {
        let name = entry
            .bind
            .as_ref()
            .map_or("sleep", |b| b.get_ref().as_str());
        let node = format!("{}{name}", file.prefix);
        if !file.nodes.insert(node.clone()) {
            self.error(file, span, format!("two calls are named '{node}'"));
            self.add_help("give this sleep an `as` name of its own, e.g. as = \"cooling_off\"");
            return None;
        }
        let duration = match &entry.sleep {
            Some(text) => Some(self.duration(file, text)?),
            None => None,
        };
        let until = match &entry.sleep_until {
            Some(expr) => Some(self.expression(file, expr, names)?),
            None => None,
        };
        let bind = match &entry.bind {
            Some(bind) => Some(self.bind(file, bind, names)?),
            None => None,
        };
        Some(Entry::Sleep(Sleep {
            node,
            duration,
            until,
            bind,
        }))
    }

    /// The step a `run` names, or an error with suggestions.
    pub(super) fn step_index(&mut self, file: &File, step: &Spanned<String>) -> Option<usize> {
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
    pub(super) fn node_name(
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

    pub(super) fn entry_policy(
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

    pub(super) fn run_entry(
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

    pub(super) fn for_each(
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

    pub(super) fn query(
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

    pub(super) fn parallel(
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

    pub(super) fn when(
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

    pub(super) fn nested(
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
        if self.stack.len() >= MAX_NESTING {
            self.error(
                file,
                path.span(),
                format!("nested workflows go deeper than {MAX_NESTING} levels"),
            )
            .label("one level too many");
            self.add_help("flatten the chain: nest fewer workflows inside each other");
            return None;
        }
        self.nested_files += 1;
        if self.nested_files > MAX_NESTED_FILES {
            // Said once: a file nesting another twice, and so on, doubles at
            // every level, and the rest of the count is the same mistake.
            if self.nested_files == MAX_NESTED_FILES + 1 {
                self.error(
                    file,
                    path.span(),
                    format!("more than {MAX_NESTED_FILES} nested workflows in all"),
                )
                .label("past the limit here");
                self.add_help("every `workflow` entry copies the nested flow; a workflow nested twice at each of several levels multiplies: nest each one once");
            }
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
}
