//! The hot path, for instruction counts: one 10-step run of native steps that
//! only hand a ~1 KB payload on (the orchestrator's fixture), in memory and
//! durably on a SQLite state file (`normal`), each run once to warm up and
//! then once inside a function of its own, which callgrind is told to count:
//!
//!     valgrind --tool=callgrind --collect-atstart=no \
//!       --toggle-collect='*measured*' target/release/examples/hot_path memory
//!
//! (`durable` for the other case).
//!
//! `tests/budget.rs` runs it that way and checks the counts against
//! `tests/budget.toml`. Time is not measured here: instructions do not
//! depend on what else the machine is doing.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use wasaga_host::capabilities::registry::load_options;
use wasaga_host::durable::Host;
use wasaga_host::journal::SyncMode;
use wasaga_host::json::Json;
use wasaga_host::saga::fixtures::linear_steps;
use wasaga_host::saga::{RunRequest, RunStatus, Saga};
use wasaga_host::subscribers::Subscribers;
use wasaga_host::wasm::{ComponentCache, EngineOptions, Runtime};
use wasaga_host::workflow::LoadedWorkflow;

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

/// Steps per run: 10, or `HOT_PATH_STEPS` (to see the cost per step stay
/// flat as runs grow).
fn steps() -> usize {
    std::env::var("HOT_PATH_STEPS").map_or(10, |n| n.parse().expect("a number of steps"))
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let workflow = Arc::new(native_workflow(dir.path()));

    if case == "memory" {
        run_in_memory(&rt, &workflow.saga);
        measured_in_memory(&rt, &workflow.saga);
        return;
    }
    assert_eq!(case, "durable", "usage: hot_path memory|durable");
    // The run begins, every transition is journaled, and it ends.
    let (journal, entities) =
        wasaga_host::durable::open_state_file(&dir.path().join("state.db"), SyncMode::Normal)
            .unwrap();
    // No component runs here; a small pool keeps the engine's reservation
    // within what valgrind can map.
    let engine = EngineOptions {
        max_instances: 4,
        max_memory_bytes: 1 << 20,
    };
    let runtime = Runtime::new(engine, ComponentCache::new(None)).unwrap();
    let host = Host::new(journal, entities, runtime);
    run_durable(&rt, &host, &workflow);
    measured_durable(&rt, &host, &workflow);
}

// The measured runs come second: the first warms caches and lazy statics up.
#[inline(never)]
fn measured_in_memory(rt: &tokio::runtime::Runtime, saga: &Saga) {
    run_in_memory(rt, saga)
}

#[inline(never)]
fn measured_durable(rt: &tokio::runtime::Runtime, host: &Host, workflow: &Arc<LoadedWorkflow>) {
    run_durable(rt, host, workflow)
}

fn run_in_memory(rt: &tokio::runtime::Runtime, saga: &Saga) {
    let report = rt.block_on(saga.run(request()));
    assert_eq!(report.status, RunStatus::Done, "{:?}", report.error);
}

fn run_durable(rt: &tokio::runtime::Runtime, host: &Host, workflow: &Arc<LoadedWorkflow>) {
    let report = rt
        .block_on(host.start(workflow, &[], request(), false))
        .unwrap()
        .report();
    assert_eq!(report.status, RunStatus::Done, "{:?}", report.error);
}

fn request() -> RunRequest {
    RunRequest::new(Json::from_value(json!({"id": 7, "seq": 0})))
}

/// The fixture's workflow as a manifest (so that a durable run pins it, as
/// any run does), bound to the fixture's native steps.
fn native_workflow(dir: &Path) -> LoadedWorkflow {
    let steps = steps();
    let mut text = String::from("[workflow]\nname = \"hot-path\"\n\n");
    for i in 1..=steps {
        text += &format!("[steps.s{i}]\ncomponent = \"native.wasm\"\n\n");
    }
    for i in 1..=steps {
        let input = if i == 1 {
            "input".to_string()
        } else {
            format!("p{}", i - 1)
        };
        text += &format!("[[flow]]\nrun = \"s{i}\"\ninput = \"{input}\"\nas = \"p{i}\"\n\n");
    }
    text += &format!("[output]\nvalue = \"p{steps}\"\n");
    let path = dir.join("hot-path.toml");
    std::fs::write(&path, text).unwrap();
    let mut options = load_options();
    options.require_components = false;
    let manifest = wasaga_host::manifest::load(&path, &options).unwrap();
    let saga = Saga::new(manifest.workflow.clone(), linear_steps(steps, false));
    LoadedWorkflow {
        manifest,
        saga,
        subscribers: Subscribers::default(),
        components: Vec::new(),
    }
}
