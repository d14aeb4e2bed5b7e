//! `host serve`: a folder of manifests as an HTTP service (axum), runs
//! executed concurrently and durably, live run events over Server-Sent
//! Events, an OpenAPI document, and a page that shows what runs did.
//!
//! It may not touch the orchestrator's internals: it drives runs through
//! [`crate::durable::Host`].

mod auth;
mod guard;
mod live;
pub mod metrics;
mod openapi;
mod routes;
mod schedules;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indexmap::IndexMap;

use crate::durable::Host;
use crate::manifest::{self, LoadOptions, ManifestErrors};
use crate::workflow::LoadedWorkflow;

pub use live::Live;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// Bearer token every route but `/healthz` requires, if set.
    pub token: Option<String>,
    /// How long `wait=true` waits before answering 202.
    pub wait_timeout: Duration,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// Whether to resume the state file's unfinished runs on start.
    pub resume: bool,
    /// How long a client may take to send a request's headers (a client
    /// that trickles them would hold a connection forever).
    pub header_timeout: Duration,
    /// The most connections open at once; past it, new ones wait to be
    /// accepted (file descriptors are finite).
    pub max_connections: usize,
    /// The most run event streams (SSE) open at once; past it, `503`.
    pub max_event_streams: usize,
}

/// A workflow served under its name.
pub struct Served {
    /// The loaded workflow.
    pub workflow: Arc<LoadedWorkflow>,
    /// The extension folders it was loaded with.
    pub extension_dirs: Vec<PathBuf>,
}

/// What every request handler shares.
pub struct AppState {
    /// The durable host.
    pub host: Arc<Host>,
    /// The workflows, by name.
    pub workflows: IndexMap<String, Served>,
    /// Live run updates.
    pub live: Arc<Live>,
    /// What `GET /metrics` says.
    pub metrics: Arc<metrics::Metrics>,
    /// The configuration.
    pub config: ServeConfig,
    /// Runs executing in this process.
    pub active: AtomicUsize,
    /// Event streams open now (each holds a task until its client goes).
    pub event_streams: Arc<AtomicUsize>,
}

/// A problem found while loading the manifests to serve.
#[derive(Debug)]
pub enum LoadProblem {
    /// A manifest is invalid.
    Manifest(ManifestErrors),
    /// Anything else (a missing folder, a duplicate name, a component).
    Other(String),
}

/// The workflow manifests in `paths` (files, or folders of `.toml` files
/// with a `[workflow]` table; extension manifests are picked up by the
/// workflows they extend), each with the folder its extensions are looked
/// for in.
pub fn find_manifests(paths: &[PathBuf]) -> Result<Vec<(PathBuf, PathBuf)>, LoadProblem> {
    let mut manifests: Vec<(PathBuf, PathBuf)> = Vec::new();
    for path in paths {
        if path.is_file() {
            manifests.push((
                path.clone(),
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            ));
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| {
            LoadProblem::Other(format!("cannot read the folder {}: {e}", path.display()))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let is_workflow = toml::from_str::<toml::Table>(&text)
                .ok()
                .is_some_and(|t| t.contains_key("workflow"));
            if is_workflow {
                manifests.push((file, path.clone()));
            }
        }
    }
    if manifests.is_empty() {
        return Err(LoadProblem::Other(
            "no workflow manifest (a .toml file with [workflow]) was found to serve".into(),
        ));
    }
    Ok(manifests)
}

/// Reads and resolves one manifest found by [`find_manifests`]; its
/// component files need not exist yet when they are to be built.
pub fn read_manifest(
    file: &Path,
    dir: &Path,
    require_components: bool,
) -> Result<crate::app::App, LoadProblem> {
    let options = LoadOptions {
        extension_dirs: vec![dir.to_path_buf()],
        require_components,
        ..crate::capabilities::registry::load_options()
    };
    manifest::load(file, &options).map_err(LoadProblem::Manifest)
}

/// Loads a resolved manifest's components and adds its workflow to those
/// served (refused when another manifest already defines its name).
pub fn add_workflow(
    workflows: &mut IndexMap<String, Served>,
    manifest: crate::app::App,
    file: &Path,
    dir: &Path,
    host: &Host,
) -> Result<(), LoadProblem> {
    let name = manifest.workflow.name.clone();
    if let Some(other) = workflows.get(&name) {
        return Err(LoadProblem::Other(format!(
            "{}: the workflow '{name}' is already defined by {}; workflow names must be unique",
            file.display(),
            other.workflow.manifest.source.path.display()
        )));
    }
    let loaded = crate::workflow::load(manifest, host.runtime(), host.entities().clone())
        .map_err(|e| LoadProblem::Other(format!("{}: {e}", file.display())))?;
    tracing::info!(workflow = %name, manifest = %file.display(), "serving");
    workflows.insert(
        name,
        Served {
            workflow: Arc::new(loaded),
            extension_dirs: vec![dir.to_path_buf()],
        },
    );
    Ok(())
}

/// How often an idle host looks for runs to take over (with jitter: between
/// half and all of it).
const SWEEP_POLL: Duration = Duration::from_secs(1);

/// Serves until SIGTERM or Ctrl-C. Runs still in flight then are left in
/// the journal; the next start resumes them.
pub async fn serve(state: Arc<AppState>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(state.config.listen).await?;
    let address = listener.local_addr()?;
    // Scripts and tests read the address from here (the port may be 0).
    println!("listening on http://{address}");
    tracing::info!(%address, "listening");
    // Unfinished runs no live host holds (this host's own from before a
    // restart, a dead host's, runs left for later) are taken over from the
    // start and then as they appear.
    let sweep = state.config.resume.then(|| state.host.sweep(SWEEP_POLL));
    // Queued runs start as their keys get room, here or on any host.
    let queue = state
        .config
        .resume
        .then(|| state.host.queue_loop(SWEEP_POLL));
    let schedules = schedules::start(state.clone(), SWEEP_POLL);
    let app = routes::router(state.clone());
    accept(listener, app, &state.config).await;
    // No new scheduled or dequeued runs while the last ones drain.
    for task in [schedules, queue].into_iter().flatten() {
        task.abort();
    }
    // Give runs in flight a moment to reach their end; the rest resume later.
    for _ in 0..40 {
        if state.active.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(sweep) = sweep {
        sweep.abort();
    }
    let left = state.active.load(Ordering::SeqCst);
    if left > 0 {
        tracing::info!(
            runs = left,
            "stopping with runs in flight: they are journaled and resume on the next start"
        );
    }
    Ok(())
}

/// Serves connections until the shutdown signal, each with a header-read
/// timeout, at most `max_connections` at once; then lets the open ones
/// finish their requests (up to 10 s).
async fn accept(listener: tokio::net::TcpListener, app: axum::Router, config: &ServeConfig) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is its own business.
            let _ = connection.await;
            drop(slot);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
