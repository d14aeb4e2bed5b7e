//! The manifest as written: serde types that mirror the TOML, with spans for
//! error messages. Nothing here is validated beyond TOML's own syntax and
//! serde's shapes; `resolve` turns it into a plan.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

/// A whole manifest file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub workflow: Spanned<WorkflowSection>,
    #[serde(default)]
    pub config: IndexMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub steps: IndexMap<Spanned<String>, Spanned<StepSection>>,
    #[serde(default)]
    pub flow: Vec<Spanned<Entry>>,
    pub output: Option<Spanned<OutputSection>>,
    /// Hook handlers declared with the workflow: `[[hooks.NAME]]`.
    #[serde(default)]
    pub hooks: IndexMap<Spanned<String>, Vec<Spanned<Handler>>>,
    #[serde(default)]
    pub subscribers: Vec<Spanned<Subscriber>>,
    /// Secrets by name: `[secrets.NAME] hosts = [...]` (never a value).
    #[serde(default)]
    pub secrets: IndexMap<Spanned<String>, Spanned<SecretSection>>,
}

/// `[secrets.NAME]`: where a secret may be sent. Its value comes from the
/// host (environment or secrets file), never from the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretSection {
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    pub description: Option<String>,
    /// Read only to refuse it with the reason.
    pub value: Option<Spanned<toml::Value>>,
}

/// An extension manifest: hook handlers (and their config) for a workflow it
/// names, without editing that workflow's manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Extension {
    pub extension: Spanned<ExtensionSection>,
    #[serde(default)]
    pub config: IndexMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub hooks: IndexMap<Spanned<String>, Vec<Spanned<Handler>>>,
    #[serde(default)]
    pub subscribers: Vec<Spanned<Subscriber>>,
}

/// `[extension]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtensionSection {
    /// The name of the workflow it extends.
    pub workflow: Spanned<String>,
    pub description: Option<String>,
}

/// A hook handler: a step (component, grants, options) with an optional name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Handler {
    pub name: Option<Spanned<String>>,
    pub component: Spanned<String>,
    pub build: Option<Spanned<Build>>,
    pub grants: Option<Spanned<Grants>>,
    pub retries: Option<Spanned<Retries>>,
    pub timeout: Option<Spanned<String>>,
    pub compensate: Option<bool>,
    pub config: Option<Spanned<toml::Value>>,
    pub on_permanent_failure: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
    pub input_schema: Option<Spanned<String>>,
    pub output_schema: Option<Spanned<String>>,
}

/// `[[subscribers]]`: a component (world `subscriber`) or a command that
/// receives the run's events after the run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscriber {
    pub name: Option<Spanned<String>>,
    pub component: Option<Spanned<String>>,
    pub build: Option<Spanned<Build>>,
    pub command: Option<Spanned<String>>,
    /// Event name patterns (`*` matches any run of characters); default all.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
}

/// `[workflow]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkflowSection {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub input_schema: Option<Spanned<String>>,
    pub output_schema: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub idempotent: Option<bool>,
    pub retention: Option<Spanned<String>>,
    pub schedule: Option<Spanned<ScheduleTable>>,
    pub concurrency: Option<Spanned<ConcurrencyTable>>,
}

/// `[workflow] concurrency = { key, limit, priority }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyTable {
    pub key: Option<Spanned<String>>,
    pub limit: Option<Spanned<i64>>,
    pub priority: Option<Spanned<String>>,
}

/// `[workflow] schedule = { cron, timezone, input, overlap }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTable {
    pub cron: Spanned<String>,
    pub timezone: Option<Spanned<String>>,
    pub input: Option<Spanned<toml::Value>>,
    pub overlap: Option<Spanned<String>>,
}

/// `[steps.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepSection {
    pub component: Spanned<String>,
    pub build: Option<Spanned<Build>>,
    pub grants: Option<Spanned<Grants>>,
    pub retries: Option<Spanned<Retries>>,
    pub timeout: Option<Spanned<String>>,
    pub compensate: Option<bool>,
    pub config: Option<Spanned<toml::Value>>,
    pub memory: Option<Spanned<String>>,
    pub description: Option<String>,
    pub on_permanent_failure: Option<Spanned<String>>,
    pub input_schema: Option<Spanned<String>>,
    pub output_schema: Option<Spanned<String>>,
    #[serde(rename = "async")]
    pub is_async: Option<bool>,
    pub background: Option<bool>,
}

/// `build = "command"` or `build = { command, workdir, watch }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Build {
    Command(String),
    Full(BuildTable),
}

/// The table form of `build`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuildTable {
    pub command: String,
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// `grants = { KEY = VALUE, ... }`: each key names a capability, whose own
/// parser reads the value (see `crate::app::grants`).
pub type Grants = IndexMap<Spanned<String>, Spanned<toml::Value>>;

/// `retries = { max, interval, backoff, max-interval }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retries {
    pub max: Spanned<u32>,
    pub interval: Option<Spanned<String>>,
    pub backoff: Option<Spanned<String>>,
    pub max_interval: Option<Spanned<String>>,
}

/// One `[[flow]]` entry (or an entry inside `parallel` / `then`). Exactly one
/// of `run`, `parallel`, `when`, `transform`, `workflow`, `hook`, `query`,
/// `for-each`, `sleep`, `sleep-until` says what it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Entry {
    pub run: Option<Spanned<String>>,
    pub parallel: Option<Spanned<Vec<Spanned<Entry>>>>,
    pub when: Option<Spanned<String>>,
    pub then: Option<Spanned<Vec<Spanned<Entry>>>>,
    pub transform: Option<Spanned<String>>,
    pub workflow: Option<Spanned<String>>,
    pub hook: Option<Spanned<String>>,
    pub query: Option<Spanned<Query>>,
    pub for_each: Option<Spanned<String>>,
    pub sleep: Option<Spanned<String>>,
    pub sleep_until: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<u32>>,
    pub input: Option<Spanned<String>>,
    #[serde(rename = "as")]
    pub bind: Option<Spanned<String>>,
    pub retries: Option<Spanned<Retries>>,
    pub timeout: Option<Spanned<String>>,
    pub compensate: Option<bool>,
    pub config: Option<Spanned<toml::Value>>,
    pub on_permanent_failure: Option<Spanned<String>>,
}

/// `query = { entity, filters, fields, limit, with-deleted }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Query {
    pub entity: Spanned<String>,
    pub filters: Option<Spanned<String>>,
    #[serde(default)]
    pub fields: Vec<String>,
    pub limit: Option<u32>,
    #[serde(default)]
    pub with_deleted: bool,
}

/// `[output]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputSection {
    pub value: Spanned<String>,
}
