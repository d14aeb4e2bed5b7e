//! `host resume`, `host cancel`, `host step succeed|fail` and `host runs
//! list|show|prune`: the commands over a state file's journal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use super::state::{StateArgs, exit_code, print_report};
use super::{RuntimeArgs, UsageError};
use crate::durable::{Answer, parse_answer_error};
use crate::journal::report_from_journal;
use crate::journal::{RunFilter, now_ms};
use crate::json::Json;
use crate::saga::{Action, Outcome, RunReport, RunStatus};

fn usage(e: impl std::fmt::Display) -> UsageError {
    UsageError(format!("error: {e}"))
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The runs to resume.
    #[arg(value_name = "RUN", required_unless_present = "all")]
    runs: Vec<String>,
    /// Every unfinished run that no live process holds.
    #[arg(long, conflicts_with = "runs")]
    all: bool,
    /// Print reports on one line even on a terminal.
    #[arg(long)]
    compact: bool,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `host resume [RUN…|--all]`: one report per line for each run resumed.
pub async fn resume(args: ResumeArgs) -> Result<ExitCode, UsageError> {
    let path = args.state.existing()?;
    let host = args.state.host(&path, &args.runtime)?;
    let mut code = ExitCode::SUCCESS;
    if args.all {
        for (run, result) in host.resume_all().await.map_err(usage)? {
            match result {
                Ok(report) => print_report(&report, true)?,
                Err(e) => {
                    eprintln!("error: run {run}: {e}");
                    code = ExitCode::from(1);
                }
            }
        }
        return Ok(code);
    }
    for run in &args.runs {
        let report = host.resume(run).await.map_err(usage)?;
        print_report(&report, args.compact)?;
    }
    Ok(code)
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run to cancel.
    #[arg(value_name = "RUN")]
    run: String,
    /// Print the report on one line even on a terminal.
    #[arg(long)]
    compact: bool,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `host cancel RUN`: compensates a running, waiting or finished run.
pub async fn cancel(args: CancelArgs) -> Result<ExitCode, UsageError> {
    let path = args.state.existing()?;
    let host = args.state.host(&path, &args.runtime)?;
    let report = host.cancel(&args.run).await.map_err(usage)?;
    print_report(&report, args.compact)?;
    Ok(exit_code(&report))
}

#[derive(Debug, clap::Subcommand)]
pub enum StepCommand {
    /// An async step succeeded: record its output and continue the run.
    Succeed {
        /// The run.
        #[arg(value_name = "RUN")]
        run: String,
        /// The waiting step (its name in the trace).
        #[arg(value_name = "STEP")]
        step: String,
        /// Its output (JSON) [default: null].
        #[arg(long, value_name = "JSON")]
        output: Option<String>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// An async step failed: record the error and compensate the run.
    Fail {
        /// The run.
        #[arg(value_name = "RUN")]
        run: String,
        /// The waiting step.
        #[arg(value_name = "STEP")]
        step: String,
        /// The error: `{"kind"?: "invalid-data", "message": "..."}`.
        #[arg(long, value_name = "JSON")]
        error: String,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

/// `host step succeed|fail RUN STEP`.
pub async fn step(command: StepCommand) -> Result<ExitCode, UsageError> {
    let (run, step, answer, state, runtime) = match command {
        StepCommand::Succeed {
            run,
            step,
            output,
            state,
            runtime,
        } => {
            let output = match output {
                Some(text) => Json::parse(text.trim())
                    .map_err(|e| usage(format!("--output is not JSON: {e}")))?,
                None => Json::null(),
            };
            (run, step, Answer::Succeed(output), state, runtime)
        }
        StepCommand::Fail {
            run,
            step,
            error,
            state,
            runtime,
        } => {
            let error = parse_answer_error(&error).map_err(usage)?;
            (run, step, Answer::Fail(error), state, runtime)
        }
    };
    let path = state.existing()?;
    let host = state.host(&path, &runtime)?;
    let report = host.answer(&run, &step, answer).await.map_err(usage)?;
    print_report(&report, false)?;
    Ok(exit_code(&report))
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// The runs of the state file, newest first.
    List {
        /// Only runs with this status.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON (one object per run) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// One run: a timeline of its steps on a terminal, its report with --json.
    Show {
        /// The run.
        #[arg(value_name = "RUN")]
        run: String,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Retries the compensations of a failed run (after fixing their
    /// cause): exactly those that failed, in the same reverse order.
    Retry {
        /// The failed run.
        #[arg(value_name = "RUN")]
        run: String,
        /// Print the report on one line even on a terminal.
        #[arg(long)]
        compact: bool,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Starts a new run like RUN (its workflow as the manifest is now, its
    /// input unless --input, its metadata), linked to it (`rerun_of`).
    Rerun {
        /// The run to run again (any status).
        #[arg(value_name = "RUN")]
        run: String,
        /// Another input (JSON) instead of the run's.
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
        /// Print the report on one line even on a terminal.
        #[arg(long)]
        compact: bool,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Deletes finished runs older than a duration.
    Prune {
        /// E.g. `7d`, `12h`.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Only runs of this workflow.
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// `host runs list|show|retry|rerun|prune`.
pub async fn runs(command: RunsCommand) -> Result<ExitCode, UsageError> {
    match command {
        RunsCommand::Rerun {
            run,
            input,
            compact,
            state,
            runtime,
        } => {
            let input = input
                .map(|text| {
                    Json::parse(text.trim()).map_err(|e| {
                        usage(format!(
                            "--input is not valid JSON: {e}\n  example: --input '{{\"name\": \"Acme\"}}'"
                        ))
                    })
                })
                .transpose()?;
            let host = state.host(&state.existing()?, &runtime)?;
            let report = host.rerun(&run, input, true).await.map_err(usage)?;
            print_report(&report, compact)?;
            Ok(exit_code(&report))
        }
        RunsCommand::Retry {
            run,
            compact,
            state,
            runtime,
        } => {
            let host = state.host(&state.existing()?, &runtime)?;
            let report = host.retry(&run).await.map_err(usage)?;
            print_report(&report, compact)?;
            Ok(exit_code(&report))
        }
        RunsCommand::List {
            status,
            workflow,
            limit,
            json,
            state,
        } => {
            let status = status
                .map(|s| {
                    RunStatus::from_name(&s).ok_or_else(|| {
                        usage(format!("'{s}' is not a status (running, waiting, compensating, queued, done, reverted, failed, cancelled)"))
                    })
                })
                .transpose()?;
            let (journal, _) = state.open(&state.existing()?)?;
            let runs = journal
                .list(&RunFilter {
                    status,
                    workflow,
                    limit: Some(limit),
                    before: None,
                    rerun_of: None,
                })
                .map_err(usage)?;
            if json {
                for run in &runs {
                    let line = serde_json::json!({
                        "run": run.id, "workflow": run.workflow, "transaction_id": run.transaction_id,
                        "status": run.status, "partial": run.partial, "created_at": rfc3339(run.created_at),
                        "finished_at": run.finished_at.map(rfc3339),
                        "tick": run.tick.map(rfc3339),
                    });
                    println!("{line}");
                }
            } else {
                println!(
                    "{:<36}  {:<24}  {:<12}  {:<24}  {:>10}  TICK",
                    "RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"
                );
                for run in &runs {
                    let end = run.finished_at.unwrap_or_else(now_ms);
                    // The schedule's tick a run was started for; `-` for
                    // runs someone started.
                    let tick = run.tick.map_or_else(|| "-".to_string(), rfc3339);
                    println!(
                        "{:<36}  {:<24}  {:<12}  {:<24}  {:>8}ms  {tick}",
                        run.id,
                        run.workflow,
                        run.status.as_str(),
                        rfc3339(run.created_at),
                        end - run.created_at
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { run, json, state } => {
            let (journal, _) = state.open(&state.existing()?)?;
            let report = report_from_journal(journal.as_ref(), &run).map_err(usage)?;
            if json || !std::io::stdout().is_terminal() {
                print_report(&report, !std::io::stdout().is_terminal())?;
            } else {
                print!("{}", timeline(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Prune {
            older_than,
            workflow,
            state,
        } => {
            let age = crate::manifest::parse_duration(&older_than).map_err(usage)?;
            let (journal, _) = state.open(&state.existing()?)?;
            let pruned = journal
                .prune(now_ms() - age.as_millis() as i64, workflow.as_deref())
                .map_err(usage)?;
            println!(
                "pruned {pruned} finished runs older than {}",
                humantime::format_duration(age)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A run as people read it: one line per call attempt on a time axis.
pub fn timeline(report: &RunReport) -> String {
    let mut out = format!(
        "run {}  workflow {}  {}{}  {:.1} ms\n",
        report.run,
        report.workflow,
        report.status.as_str(),
        if report.partial { " (partial)" } else { "" },
        report.duration_ms
    );
    if report.transaction_id != report.run {
        out.push_str(&format!("transaction {}\n", report.transaction_id));
    }
    let total = report.duration_ms.max(1.0);
    for entry in &report.trace {
        let width = 30.0;
        let start = ((entry.started_ms / total) * width)
            .round()
            .clamp(0.0, width) as usize;
        let length = ((entry.duration_ms / total) * width)
            .round()
            .clamp(1.0, width - start as f64 + 1.0) as usize;
        let mark = if entry.action == Action::Compensate {
            '<'
        } else {
            '='
        };
        let bar: String = format!("{}{}", " ".repeat(start), mark.to_string().repeat(length));
        let outcome = match entry.outcome {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        };
        let name = entry.node.as_deref().unwrap_or(&entry.step);
        out.push_str(&format!(
            "  {:>8.1}ms  {:<10} {:<28} #{:<2} {:<7} {:>8.1}ms  |{:<31}|\n",
            entry.started_ms,
            entry.action.as_str(),
            name,
            entry.attempt,
            outcome,
            entry.duration_ms,
            bar
        ));
        if let Some(error) = &entry.error {
            out.push_str(&format!("              {error}\n"));
        }
        for request in &entry.requests {
            let outcome = match (&request.status, &request.error) {
                (_, Some(error)) => error.clone(),
                (Some(status), None) => status.to_string(),
                (None, None) => "no answer".to_string(),
            };
            out.push_str(&format!(
                "              -> {} {}  {outcome}  {:.1}ms\n",
                request.method, request.url, request.duration_ms
            ));
        }
    }
    if let Some(error) = &report.error {
        out.push_str(&format!("error: {}: {}\n", error.kind, error.message));
        for failure in &error.compensation_failures {
            out.push_str(&format!(
                "  compensation of '{}' failed: {}\n",
                failure.step, failure.error
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{OutboundRequest, RunStatus, TraceEntry};

    #[test]
    fn the_timeline_lists_each_calls_outbound_requests() {
        let entry = TraceEntry {
            step: "charge".into(),
            node: None,
            action: Action::Invoke,
            attempt: 1,
            outcome: Outcome::Ok,
            input: None,
            output: None,
            error: None,
            started_ms: 0.0,
            duration_ms: 12.0,
            requests: vec![
                OutboundRequest {
                    method: "POST".into(),
                    url: "https://api.pay.example/v1/charges".into(),
                    status: Some(201),
                    error: None,
                    duration_ms: 9.5,
                    started_at: None,
                },
                OutboundRequest {
                    method: "GET".into(),
                    url: "http://127.0.0.1:9/".into(),
                    status: None,
                    error: Some("denied: not granted".into()),
                    duration_ms: 0.1,
                    started_at: None,
                },
            ],
        };
        let report = RunReport {
            run: "r".into(),
            workflow: "w".into(),
            transaction_id: "r".into(),
            status: RunStatus::Done,
            partial: false,
            output: None,
            error: None,
            errors: Vec::new(),
            trace: vec![entry],
            events: Vec::new(),
            all_events: Vec::new(),
            duration_ms: 12.0,
            wake_at: None,
            rerun_of: None,
            reruns: Vec::new(),
            tick: None,
            trace_id: None,
        };
        let text = timeline(&report);
        assert!(
            text.contains("-> POST https://api.pay.example/v1/charges  201  9.5ms"),
            "{text}"
        );
        assert!(
            text.contains("-> GET http://127.0.0.1:9/  denied: not granted"),
            "{text}"
        );
    }
}
