//! The `host` command: `run`, `check`, `build`. Results are JSON on stdout;
//! logs and progress go to stderr. Exit codes: 0 done, 1 the workflow failed
//! (reverted or failed), 2 a usage, manifest or input error.

mod build;
mod check;
mod new;
mod run;
mod runs;
mod serve;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs workflows of sandboxed WebAssembly steps.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// How log lines look on stderr: `text`, or `json` (one JSON object per
    /// line, for a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "WASAGA_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    /// Send OpenTelemetry traces (OTLP over HTTP, protobuf) to the collector
    /// at this base URL (`/v1/traces` is added), e.g. http://127.0.0.1:4318.
    /// Without it the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) decides; with neither, none are sent.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// The process's trace exporter, if traces are sent (set once at start).
static TELEMETRY: std::sync::OnceLock<Option<std::sync::Arc<crate::otel::Telemetry>>> =
    std::sync::OnceLock::new();

/// The trace exporter every host of this process hands its runs' spans to.
pub fn telemetry() -> Option<std::sync::Arc<crate::otel::Telemetry>> {
    TELEMETRY.get().cloned().flatten()
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people (colour on a terminal).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with
    /// `message`), and the spans it happened in.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow and print its result as JSON.
    Run(run::RunArgs),
    /// Validate manifests (and their components) without running anything.
    Check(check::CheckArgs),
    /// Build the components of a manifest with their declared build commands.
    Build(build::BuildArgs),
    /// Continue unfinished runs from the journal.
    Resume(runs::ResumeArgs),
    /// Compensate a running, waiting or finished run.
    Cancel(runs::CancelArgs),
    /// Answer an async step that waits.
    #[command(subcommand)]
    Step(runs::StepCommand),
    /// The runs of a state file.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Serve the workflows of some folders over HTTP, with a runs page.
    Serve(serve::ServeArgs),
    /// Create a new step project (Rust, Python or JavaScript).
    #[command(subcommand)]
    New(new::NewCommand),
}

/// Options shared by commands that load components.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Where compiled components are cached [default: $WASAGA_CACHE_DIR, else ~/.cache/wasaga].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components on every start instead of caching them.
    #[arg(long)]
    no_cache: bool,
    /// A PEM file of CA certificates that steps' HTTPS requests trust besides
    /// the system's (for a private CA).
    #[arg(long, value_name = "FILE", env = "WASAGA_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// A TOML file of secret values (`name = "value"`); a
    /// WASAGA_SECRET_<NAME> variable wins over it.
    #[arg(long, value_name = "FILE", env = "WASAGA_SECRETS")]
    secrets: Option<PathBuf>,
    /// The most sandboxes alive at once (concurrent step calls; beyond it
    /// calls wait for a slot) [default: 1000 for `host serve`, 256 otherwise].
    #[arg(long, value_name = "N", env = "WASAGA_MAX_INSTANCES", value_parser = clap::value_parser!(u32).range(4..=100_000))]
    max_instances: Option<u32>,
    /// What `max_instances` is when not given (the command's own).
    #[arg(skip = ONE_SHOT_INSTANCES)]
    default_instances: u32,
}

/// The instance pool of commands that run a few workflows and exit. Each
/// slot of the pool is reserved when the engine starts (its stack's guard
/// page is one `mprotect`, one more memory mapping to make and unmake), so
/// a pool of 1000 cost `host run` ~4 ms of its ~15 (`cargo bench --bench
/// startup`); 256 still lets one workflow run 115 calls at once.
const ONE_SHOT_INSTANCES: u32 = 256;

/// The instance pool of `host serve`: many runs at once, started once.
pub const SERVER_INSTANCES: u32 = 1000;

/// A failure of the command itself (not of a workflow): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(error: E) -> UsageError {
        UsageError(error.to_string())
    }
}

/// Entry point of the `host` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let telemetry = crate::otel::Telemetry::from_env(cli.otlp_endpoint.as_deref())
            .map_err(|e| UsageError(format!("error: {e}")))?;
        if let Some(telemetry) = &telemetry {
            tracing::debug!(endpoint = %telemetry.endpoint, "traces are sent over OTLP");
        }
        let _ = TELEMETRY.set(telemetry.clone());
        let result = match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Build(args) => build::build_command(args).await,
            Command::Resume(args) => runs::resume(args).await,
            Command::Cancel(args) => runs::cancel(args).await,
            Command::Step(command) => runs::step(command).await,
            Command::Runs(command) => runs::runs(command).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::New(command) => new::new(command),
        };
        // The last spans (a `host run`'s, a server's drained runs) leave
        // before the process does.
        if let Some(telemetry) = telemetry {
            telemetry.shutdown().await;
        }
        result
    });
    match result {
        Ok(code) => code,
        Err(UsageError(message)) => {
            eprintln!("{}", message.trim_end());
            ExitCode::from(2)
        }
    }
}

fn init_logging(quiet: bool, format: LogFormat) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASAGA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    if format == LogFormat::Json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .json()
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .compact()
        .init();
}

impl RuntimeArgs {
    /// These options with `instances` as the pool's size unless given.
    pub fn pool_by_default(mut self, instances: u32) -> RuntimeArgs {
        self.default_instances = instances;
        self
    }

    /// The WASM runtime these options describe.
    fn runtime(&self) -> Result<std::sync::Arc<crate::wasm::Runtime>, UsageError> {
        let dir = if self.no_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(crate::wasm::ComponentCache::default_dir)
        };
        let secrets = match &self.secrets {
            Some(path) => crate::capabilities::SecretSource::file(path)
                .map_err(|e| UsageError(format!("error: {e}")))?,
            None => crate::capabilities::SecretSource::environment(),
        };
        let options = crate::capabilities::http::ClientOptions {
            ca_file: self.ca_file.clone(),
        };
        let outside = crate::wasm::Outside::new(options, secrets);
        if self.ca_file.is_some() {
            // A bad CA file is a usage error now, not a failed request later.
            outside
                .http
                .check()
                .map_err(|e| UsageError(format!("error: {e}")))?;
        }
        let engine = crate::wasm::EngineOptions {
            max_instances: self.max_instances.unwrap_or(self.default_instances),
            ..Default::default()
        };
        crate::wasm::Runtime::with_outside(engine, crate::wasm::ComponentCache::new(dir), outside)
            .map_err(|e| UsageError(format!("error: cannot start the WebAssembly engine: {e:#}")))
    }
}

/// Renders manifest errors for stderr (with colour on a terminal).
fn manifest_errors(errors: &crate::manifest::ManifestErrors) -> UsageError {
    use std::io::IsTerminal;
    UsageError(errors.render(std::io::stderr().is_terminal()))
}
