//! `host run MANIFEST`: runs a workflow durably and prints its report as JSON.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::build::build_components;
use super::state::{StateArgs, exit_code, print_report};
use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::json::Json;
use crate::manifest::{self, LoadOptions};
use crate::saga::RunRequest;

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
    /// Build missing or stale components with their manifest `build` commands first.
    #[arg(long)]
    build: bool,
    /// The run's transaction id [default: the run id, a new UUIDv7]. A
    /// transaction that already ran returns its recorded result.
    #[arg(long, value_name = "ID")]
    transaction_id: Option<String>,
    /// Run metadata handed to every step (a JSON object).
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// Do not resume the state file's unfinished runs first.
    #[arg(long)]
    no_resume: bool,
    /// Print the report on one line even on a terminal.
    #[arg(long)]
    compact: bool,
    /// More folders with extension manifests (hook handlers, subscribers).
    #[arg(long, value_name = "DIR")]
    extensions: Vec<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub async fn run(args: RunArgs) -> Result<ExitCode, UsageError> {
    let input = read_input(&args)?;
    let metadata = match &args.metadata {
        Some(text) => Json::parse(text.trim())
            .ok()
            .filter(|m| m.value().is_object())
            .ok_or_else(|| UsageError("error: --metadata must be a JSON object".into()))?,
        None => Json::from_value(serde_json::json!({})),
    };
    let options = LoadOptions {
        require_components: !args.build,
        extension_dirs: args.extensions.clone(),
        ..crate::capabilities::registry::load_options()
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
        .location(manifest.source.path.parent().unwrap_or(Path::new(".")));
    let host = args.state.host(&state, &args.runtime)?;
    if !args.no_resume {
        for (run, result) in host
            .resume_all()
            .await
            .map_err(|e| UsageError(format!("error: {e}")))?
        {
            match result {
                Ok(report) => {
                    tracing::info!(run = %run, status = report.status.as_str(), "resumed run finished")
                }
                Err(e) => tracing::warn!(run = %run, "could not resume: {e}"),
            }
        }
    }
    let workflow = Arc::new(
        crate::workflow::load(manifest, host.runtime(), host.entities().clone())
            .map_err(|e| UsageError(format!("error: {e}")))?,
    );
    let mut request = RunRequest::new(input);
    request.metadata = metadata;
    if let Some(id) = args.transaction_id {
        request.transaction_id = id;
    }
    // A caller's trace (OpenTelemetry's environment carrier: a CI job or a
    // script that is itself traced sets TRACEPARENT).
    request.trace_context = std::env::var("TRACEPARENT")
        .ok()
        .and_then(|value| crate::telemetry::TraceContext::from_traceparent(&value));
    tracing::info!(workflow = %workflow.manifest.workflow.name, run = %request.run_id, "run started");
    let started = host
        .start(&workflow, &args.extensions, request, true)
        .await
        .map_err(|e| UsageError(format!("error: {e}")))?;
    let report = started.report();
    tracing::info!(run = %report.run, status = report.status.as_str(), ms = report.duration_ms, "run finished");
    print_report(&report, args.compact)?;
    Ok(exit_code(&report))
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
