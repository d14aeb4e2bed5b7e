//! What the manifest grants one step: one entry per capability, each read from
//! `grants = { KEY = ... }` by that capability's own [`GrantParser`] (the host
//! lists them in a [`GrantRegistry`]), and the `not-allowed` message that shows
//! the manifest line that would grant what was denied.
//!
//! The loader knows no capability by name: it hands each key to the parser
//! registered for it. This module may not name a capability either.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{did_you_mean, name_problem};
use toml::Spanned;

/// One capability's grant to one step, as parsed from the manifest.
pub trait Grant: Any + fmt::Debug + Send + Sync {
    /// The grant as written in `grants = { ... }`, e.g. `entities = ["brand"]`.
    fn to_toml(&self) -> String;
}

/// Reads one capability's grant from a step's `grants` table.
pub trait GrantParser: Send + Sync {
    /// The key in `grants = { KEY = ... }`.
    fn key(&self) -> &'static str;
    /// Reads the value, reporting every problem to `problems`; `None` grants
    /// nothing (for example `events = false`).
    fn parse(&self, entry: &GrantEntry<'_>, problems: &mut GrantProblems)
    -> Option<Arc<dyn Grant>>;
}

/// The capabilities a host offers, in the order their grants are written.
#[derive(Clone, Default)]
pub struct GrantRegistry {
    parsers: Vec<Arc<dyn GrantParser>>,
    order: Arc<Vec<&'static str>>,
}

impl GrantRegistry {
    /// A registry of these parsers (their order is the order of `to_toml`).
    pub fn new(parsers: Vec<Arc<dyn GrantParser>>) -> GrantRegistry {
        let order = Arc::new(parsers.iter().map(|p| p.key()).collect());
        GrantRegistry { parsers, order }
    }

    /// The parser of `key`.
    pub fn parser(&self, key: &str) -> Option<&dyn GrantParser> {
        self.parsers
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.as_ref())
    }

    /// Every capability's key.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.order.iter().copied()
    }

    /// An empty set of grants for a step declared at `place`.
    pub fn none(&self, place: GrantPlace) -> Grants {
        Grants {
            items: Vec::new(),
            order: self.order.clone(),
            place,
        }
    }
}

/// One `grants` entry as written, for its parser.
pub struct GrantEntry<'a> {
    /// The value's TOML text.
    text: &'a str,
    /// Where the value starts in the manifest.
    offset: usize,
    /// The keys of the manifest's `[config]` table.
    config_keys: &'a [&'a str],
    /// The secrets the manifest declares.
    secrets: &'a [&'a str],
}

/// What a value is parsed inside of, so that spans inside it map back.
const WRAPPER: &str = "v = ";

impl<'a> GrantEntry<'a> {
    /// The entry whose value is `text`, written at `offset` of a manifest with
    /// these `[config]` keys.
    pub fn new(text: &'a str, offset: usize, config_keys: &'a [&'a str]) -> GrantEntry<'a> {
        GrantEntry {
            text,
            offset,
            config_keys,
            secrets: &[],
        }
    }

    /// The same entry in a manifest that declares these secrets.
    pub fn with_secrets(self, secrets: &'a [&'a str]) -> GrantEntry<'a> {
        GrantEntry { secrets, ..self }
    }

    /// The secrets the manifest declares (`[secrets.NAME]`).
    pub fn secrets(&self) -> &[&str] {
        self.secrets
    }

    /// The value as `T` (with `toml::Spanned` inside it where locations
    /// matter; map them with [`GrantEntry::locate`]). A value of the wrong
    /// shape is reported where it is written.
    pub fn deserialize<T: DeserializeOwned>(&self, problems: &mut GrantProblems) -> Option<T> {
        #[derive(serde::Deserialize)]
        struct Wrapped<T> {
            v: T,
        }
        match toml::from_str::<Wrapped<T>>(&format!("{WRAPPER}{}", self.text)) {
            Ok(wrapped) => Some(wrapped.v),
            Err(error) => {
                let span = error.span().map_or(0..self.text.len(), |s| {
                    s.start.saturating_sub(WRAPPER.len())..s.end.saturating_sub(WRAPPER.len())
                });
                problems.error(self.locate_value(span), error.message().trim().to_string());
                None
            }
        }
    }

    /// The manifest location of a span inside a [`GrantEntry::deserialize`]d value.
    pub fn locate(&self, span: Range<usize>) -> Range<usize> {
        self.locate_value(
            span.start.saturating_sub(WRAPPER.len())..span.end.saturating_sub(WRAPPER.len()),
        )
    }

    fn locate_value(&self, span: Range<usize>) -> Range<usize> {
        self.offset + span.start..self.offset + span.end
    }

    /// The value's TOML text as written.
    pub fn text(&self) -> &str {
        self.text
    }

    /// Where the whole value is written.
    pub fn span(&self) -> Range<usize> {
        self.offset..self.offset + self.text.len()
    }

    /// The keys of the manifest's `[config]` table.
    pub fn config_keys(&self) -> &[&str] {
        self.config_keys
    }
}

/// Problems a grant parser found, located in the manifest.
#[derive(Debug, Default)]
pub struct GrantProblems {
    /// In the order found.
    pub items: Vec<GrantProblem>,
}

/// One problem of a grant.
#[derive(Debug)]
pub struct GrantProblem {
    /// Where, in the manifest.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl GrantProblems {
    /// Reports a problem at `span`; add a fix with [`GrantProblem::help`].
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut GrantProblem {
        self.items.push(GrantProblem {
            span,
            message: message.into(),
            help: None,
        });
        self.items.last_mut().expect("just pushed")
    }

    /// Checks that `name` follows the manifest's naming rule, as for steps.
    pub fn check_name(&mut self, span: Range<usize>, name: &str, what: &str) -> bool {
        match name_problem(name, what) {
            Some((message, help)) => {
                self.error(span, message).help(help);
                false
            }
            None => true,
        }
    }
}

impl GrantProblem {
    /// Says how to fix it.
    pub fn help(&mut self, help: impl Into<String>) {
        self.help = Some(help.into());
    }
}

/// The capabilities granted to one step (`grants = { ... }` in its manifest entry).
#[derive(Clone, Debug, Default)]
pub struct Grants {
    items: Vec<(&'static str, Arc<dyn Grant>)>,
    order: Arc<Vec<&'static str>>,
    /// Where to grant more.
    pub place: GrantPlace,
}

/// Where in the manifest a step's grants are written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantPlace {
    /// The manifest's file name.
    pub file: String,
    /// The step's name.
    pub step: String,
    /// The line of its `grants` key, or of its `[steps.NAME]` header.
    pub line: usize,
}

/// A grant of names, the shape several capabilities share:
/// `entities = ["brand"]`, `config = ["key"]`, `secrets = ["pay-key"]`.
#[derive(Debug, Clone)]
pub struct NamesGrant {
    key: &'static str,
    names: BTreeSet<String>,
}

impl NamesGrant {
    /// No names yet, under `key`.
    pub fn new(key: &'static str) -> NamesGrant {
        NamesGrant {
            key,
            names: BTreeSet::new(),
        }
    }

    /// Adds a name.
    pub fn insert(&mut self, name: impl Into<String>) {
        self.names.insert(name.into());
    }

    /// Whether it grants `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The grant, or `None` when it names nothing.
    pub fn into_grant(self) -> Option<Arc<dyn Grant>> {
        (!self.names.is_empty()).then(|| Arc::new(self) as Arc<dyn Grant>)
    }
}

impl Grant for NamesGrant {
    fn to_toml(&self) -> String {
        format!("{} = {}", self.key, toml_list(&self.names))
    }
}

impl GrantEntry<'_> {
    /// A list of names each of which the manifest must declare (`[config]`
    /// keys, `[secrets.NAME]`): one undeclared is reported where it is
    /// written, with `undeclared(name)` (its message and how to declare it)
    /// and a did-you-mean among `declared`.
    pub fn declared_names(
        &self,
        problems: &mut GrantProblems,
        key: &'static str,
        declared: &[&str],
        undeclared: impl Fn(&str) -> (String, String),
    ) -> Option<Arc<dyn Grant>> {
        let names: Vec<Spanned<String>> = self.deserialize(problems)?;
        let mut grant = NamesGrant::new(key);
        for name in names {
            let text = name.get_ref();
            if !declared.contains(&text.as_str()) {
                let hint = did_you_mean(text, declared.iter().copied())
                    .map(|k| format!("did you mean '{k}'? "))
                    .unwrap_or_default();
                let (message, help) = undeclared(text);
                problems
                    .error(self.locate(name.span()), message)
                    .help(format!("{hint}{help}"));
            }
            grant.insert(text.clone());
        }
        grant.into_grant()
    }
}

impl Grants {
    /// `Ok` when the [`NamesGrant`] under `key` holds `name`; otherwise the
    /// `not-allowed` message showing the grant that would (see
    /// [`Grants::denial`]), `what` naming the thing denied.
    pub fn require_name(&self, key: &'static str, name: &str, what: &str) -> Result<(), String> {
        let granted = self.get::<NamesGrant>(key);
        if granted.is_some_and(|g| g.contains(name)) {
            return Ok(());
        }
        let mut wanted = granted.cloned().unwrap_or_else(|| NamesGrant::new(key));
        wanted.insert(name);
        Err(self.denial(key, Arc::new(wanted), what))
    }

    /// Adds (or replaces) the grant of capability `key`.
    pub fn insert(&mut self, key: &'static str, grant: Arc<dyn Grant>) {
        self.items.retain(|(k, _)| *k != key);
        self.items.push((key, grant));
    }

    /// The grant of capability `key`, if the step has one.
    pub fn get<G: Grant>(&self, key: &str) -> Option<&G> {
        self.items
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, grant)| (&**grant as &dyn Any).downcast_ref::<G>())
    }

    /// The `not-allowed` message for `what`, naming the line that would grant
    /// it: these grants with `key` replaced by `wanted`.
    pub fn denial(&self, key: &'static str, wanted: Arc<dyn Grant>, what: &str) -> String {
        let mut more = self.clone();
        more.insert(key, wanted);
        format!(
            "step '{}' is not granted {what}; to grant it, write in {} under [steps.{}] (line {}): {}",
            self.place.step,
            self.place.file,
            self.place.step,
            self.place.line,
            more.to_toml()
        )
    }

    /// The grants as the manifest line that declares them.
    pub fn to_toml(&self) -> String {
        let rank = |key: &str| {
            self.order
                .iter()
                .position(|k| *k == key)
                .unwrap_or(usize::MAX)
        };
        let mut items: Vec<_> = self.items.iter().collect();
        items.sort_by_key(|(key, _)| rank(key));
        let parts: Vec<String> = items.iter().map(|(_, grant)| grant.to_toml()).collect();
        format!("grants = {{ {} }}", parts.join(", "))
    }
}

/// A TOML list of names, as grants write them: `["a", "b"]`.
pub fn toml_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = names
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref()))
        .collect();
    format!("[{}]", items.join(", "))
}

impl fmt::Debug for GrantRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.order.iter()).finish()
    }
}
