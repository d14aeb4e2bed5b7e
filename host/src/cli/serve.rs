//! `host serve [MANIFEST_DIR…]`: the workflows of some folders over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::state::StateArgs;
use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::server::{AppState, Live, LoadProblem, ServeConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Folders of manifests (or manifest files) to serve [default: the current folder].
    #[arg(value_name = "MANIFEST_DIR")]
    paths: Vec<PathBuf>,
    /// Where to listen (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every route but /healthz.
    #[arg(
        long,
        env = "WASAGA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// How long a request that waits for its run waits before answering 202.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    wait_timeout: String,
    /// The largest request body accepted (e.g. 1MiB).
    #[arg(long, default_value = "1MiB", value_name = "SIZE")]
    max_body: String,
    /// How long a client may take to send a request's headers.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    header_timeout: String,
    /// The most connections open at once (more wait to be accepted).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// The most run event streams open at once (more get 503).
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_event_streams: usize,
    /// Do not resume the state file's unfinished runs on start.
    #[arg(long)]
    no_resume: bool,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode, UsageError> {
    let wait_timeout = crate::manifest::parse_duration(&args.wait_timeout)
        .map_err(|e| UsageError(format!("error: --wait-timeout: {e}")))?;
    let body_limit = crate::manifest::parse_size(&args.max_body)
        .map_err(|e| UsageError(format!("error: --max-body: {e}")))?;
    let header_timeout = crate::manifest::parse_duration(&args.header_timeout)
        .map_err(|e| UsageError(format!("error: --header-timeout: {e}")))?;
    if args.max_connections == 0 {
        return Err(UsageError(
            "error: --max-connections must be at least 1".into(),
        ));
    }
    if !args.listen.ip().is_loopback() && args.token.is_none() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback without --token: anyone who can reach it can run workflows");
    }
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let location = args.state.location(&paths[0]);
    let live = Arc::new(Live::default());
    let host = Arc::new(
        args.state
            .host(&location, &args.runtime)?
            .observed(live.clone()),
    );
    let workflows =
        crate::server::load_workflows(&paths, &host).map_err(|problem| match problem {
            LoadProblem::Manifest(errors) => manifest_errors(&errors),
            LoadProblem::Other(message) => UsageError(format!("error: {message}")),
        })?;
    let state = Arc::new(AppState {
        host,
        workflows,
        live,
        config: ServeConfig {
            listen: args.listen,
            token: args.token.clone(),
            wait_timeout,
            body_limit,
            resume: !args.no_resume,
            header_timeout,
            max_connections: args.max_connections,
            max_event_streams: args.max_event_streams,
        },
        active: AtomicUsize::new(0),
        event_streams: Default::default(),
    });
    crate::server::serve(state)
        .await
        .map_err(|e| UsageError(format!("error: cannot serve on {}: {e}", args.listen)))?;
    Ok(ExitCode::SUCCESS)
}
