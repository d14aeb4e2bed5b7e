//! `host serve [MANIFEST_DIR…]`: the workflows of some folders over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use indexmap::IndexMap;

use super::state::StateArgs;
use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::server::{
    AppState, Live, LoadProblem, ServeConfig, Served, add_workflow, find_manifests, read_manifest,
};

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
    /// Build each workflow's stale or missing components first (each
    /// step's `build` command), as `host run --build` does.
    #[arg(long)]
    build: bool,
    /// Refuse to start when any manifest does not load (by default the
    /// workflows that load are served and each one that does not is
    /// reported).
    #[arg(long)]
    strict: bool,
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
    let metrics = Arc::new(crate::server::metrics::Metrics::default());
    let runtime = args
        .runtime
        .clone()
        .pool_by_default(super::SERVER_INSTANCES);
    let host = args.state.host(&location, &runtime)?;
    let observed = crate::server::metrics::Observed {
        metrics: metrics.clone(),
        journal: host.journal().clone(),
    };
    let observers = crate::journal::Observers(vec![live.clone(), Arc::new(observed)]);
    let host = Arc::new(host.observed(Arc::new(observers)));
    let workflows = load_workflows(&paths, &host, args.build, args.strict).await?;
    let state = Arc::new(AppState {
        host,
        workflows,
        live,
        metrics,
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

/// The workflows to serve: every manifest found, built first with
/// `--build`. One that does not load is reported (the same located message
/// and fix as `host check` gives) and left out, or, with `--strict`, stops
/// the start; so does finding none that loads.
async fn load_workflows(
    paths: &[PathBuf],
    host: &crate::durable::Host,
    build: bool,
    strict: bool,
) -> Result<IndexMap<String, Served>, UsageError> {
    let problem_text = |problem: LoadProblem| match problem {
        LoadProblem::Manifest(errors) => manifest_errors(&errors),
        LoadProblem::Other(message) => UsageError(format!("error: {message}")),
    };
    let manifests = find_manifests(paths).map_err(problem_text)?;
    let mut workflows = IndexMap::new();
    let mut left_out = Vec::new();
    for (file, dir) in manifests {
        let loaded = async {
            let manifest = read_manifest(&file, &dir, !build).map_err(problem_text)?;
            if build {
                super::build::build_components(&manifest).await?;
            }
            add_workflow(&mut workflows, manifest, &file, &dir, host).map_err(problem_text)
        }
        .await;
        if let Err(problem) = loaded {
            if strict {
                return Err(problem);
            }
            eprintln!("{}", problem.0.trim_end());
            eprintln!(
                "warning: not serving {} (the error above); `--strict` refuses to start instead\n",
                file.display()
            );
            left_out.push(file);
        }
    }
    if workflows.is_empty() {
        return Err(UsageError(format!(
            "error: none of the {} workflow manifests loaded (each error is above)",
            left_out.len()
        )));
    }
    if !left_out.is_empty() {
        tracing::warn!(
            serving = workflows.len(),
            left_out = left_out.len(),
            "serving the workflows that loaded"
        );
    }
    Ok(workflows)
}
