//! `host run MANIFEST`: runs a workflow once and prints its report as JSON.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::build::build_components;
use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::capabilities::EntityStore;
use crate::json::Json;
use crate::manifest::{self, LoadOptions};
use crate::saga::{RunRequest, RunStatus};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow manifest (TOML).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// The workflow input as JSON [default: {}].
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input JSON from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// The state file (SQLite) [default: .wasaga/state.db beside the manifest].
    #[arg(long, value_name = "PATH", env = "WASAGA_STATE")]
    state: Option<PathBuf>,
    /// Build missing or stale components with their manifest `build` commands first.
    #[arg(long)]
    build: bool,
    /// The run's transaction id [default: the run id].
    #[arg(long, value_name = "ID")]
    transaction_id: Option<String>,
    /// Print the report on one line even on a terminal.
    #[arg(long)]
    compact: bool,
    /// More folders with extension manifests (hook handlers, subscribers).
    #[arg(long, value_name = "DIR")]
    extensions: Vec<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub async fn run(args: RunArgs) -> Result<ExitCode, UsageError> {
    let input = read_input(&args)?;
    let options = LoadOptions {
        require_components: !args.build,
        extension_dirs: args.extensions.clone(),
        ..LoadOptions::default()
    };
    let manifest = manifest::load(&args.manifest, &options).map_err(|e| manifest_errors(&e))?;
    if let Some(schema) = &manifest.input_schema {
        let violations = schema.violations(input.value());
        if !violations.is_empty() {
            return Err(UsageError(format!(
                "error: the input does not match the workflow's input-schema ({}):\n  {}",
                schema.path().display(),
                violations.join("\n  ")
            )));
        }
    }
    if args.build {
        build_components(&manifest).await?;
    }
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| default_state(&manifest.source.path));
    let entities = Arc::new(open_state(&state)?);
    let runtime = args.runtime.runtime()?;
    let workflow = crate::workflow::load(manifest, &runtime, entities)
        .map_err(|e| UsageError(format!("error: {e}")))?;
    let mut request = RunRequest::new(input);
    if let Some(id) = args.transaction_id {
        request.transaction_id = id;
    }
    tracing::info!(workflow = %workflow.manifest.workflow.name, run = %request.run_id, "run started");
    let report = workflow.saga.run(request).await;
    tracing::info!(run = %report.run, status = report.status.as_str(), ms = report.duration_ms, "run finished");
    if !workflow.subscribers.is_empty() {
        let delivered = workflow
            .subscribers
            .deliver(&report.workflow, &report.run, &report.all_events)
            .await;
        tracing::info!(
            ok = delivered.ok,
            failed = delivered.failed,
            "events delivered to subscribers"
        );
    }
    let text = if std::io::stdout().is_terminal() && !args.compact {
        serde_json::to_string_pretty(&report)
    } else {
        serde_json::to_string(&report)
    }
    .map_err(|e| UsageError(format!("error: cannot print the report: {e}")))?;
    println!("{text}");
    Ok(match report.status {
        RunStatus::Done | RunStatus::Running | RunStatus::Waiting => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

fn read_input(args: &RunArgs) -> Result<Json, UsageError> {
    let (text, origin) = match (&args.input, &args.input_file) {
        (Some(text), _) => (text.clone(), "--input".to_string()),
        (None, Some(path)) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| UsageError(format!("error: cannot read the input from stdin: {e}")))?;
            (text, "stdin".to_string())
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                UsageError(format!(
                    "error: cannot read the input file {}: {e}",
                    path.display()
                ))
            })?;
            (text, path.display().to_string())
        }
        (None, None) => ("{}".to_string(), String::new()),
    };
    Json::parse(text.trim()).map_err(|e| {
        UsageError(format!(
            "error: the input in {origin} is not valid JSON: {e}\n  example: --input '{{\"name\": \"Acme\"}}'"
        ))
    })
}

/// `.wasaga/state.db` in the manifest's folder.
fn default_state(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join(".wasaga")
        .join("state.db")
}

fn open_state(path: &Path) -> Result<EntityStore, UsageError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            UsageError(format!(
                "error: cannot create the state folder {}: {e}",
                dir.display()
            ))
        })?;
    }
    EntityStore::open(path).map_err(|e| {
        UsageError(format!(
            "error: cannot open the state file {}: {e}",
            path.display()
        ))
    })
}
