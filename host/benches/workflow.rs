//! Throughput of a 10-step linear workflow passing ~1 KB of JSON between
//! steps (the shape of the Medusa bench harness): a fresh sandbox per call,
//! with every step succeeding, and with the 10th failing (9 compensations).
//!
//! The baseline, measured in the same run, is the same workflow with native
//! Rust closures as steps: the ratio is the cost of sandboxing.
//!
//! `call` times one call alone: the payload guest, its native twin, and
//! the sandbox's floor (a fresh instance of a guest that returns at once).
//!
//!     cargo bench -p wasaga-host --bench workflow

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use wasaga_host::capabilities::EntityStore;
use wasaga_host::capabilities::registry::load_options;
use wasaga_host::durable::Host;
use wasaga_host::journal::SyncMode;
use wasaga_host::json::Json;
use wasaga_host::manifest;
use wasaga_host::saga::{
    Action, FailureKind, FnStep, Invoked, RunRequest, RunStatus, Saga, Step, StepCall, StepFailure,
};
use wasaga_host::wasm::{ComponentCache, Runtime};

mod common;

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

const STEPS: usize = 10;

/// A manifest of 10 payload steps in sequence; the last fails if `fail_last`.
fn manifest(dir: &Path, component: &Path, fail_last: bool) -> PathBuf {
    let mut text = String::from("[workflow]\nname = \"bench-linear10\"\n\n");
    for i in 1..=STEPS {
        let fail = fail_last && i == STEPS;
        text += &format!(
            "[steps.s{i}]\ncomponent = \"{}\"\nconfig = {{ step = {i}, fail = {fail} }}\n\n",
            component.display()
        );
    }
    for i in 1..=STEPS {
        let input = if i == 1 {
            "input".to_string()
        } else {
            format!("p{}", i - 1)
        };
        text += &format!("[[flow]]\nrun = \"s{i}\"\ninput = \"{input}\"\nas = \"p{i}\"\n\n");
    }
    text += &format!("[output]\nvalue = \"p{STEPS}\"\n");
    let path = dir.join(format!(
        "linear10-{}.toml",
        if fail_last { "fail" } else { "ok" }
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// The WASM saga of a manifest.
fn wasm_saga(runtime: &Arc<Runtime>, path: &Path) -> Saga {
    let manifest = manifest::load(path, &load_options()).unwrap();
    let entities = Arc::new(EntityStore::in_memory().unwrap());
    wasaga_host::workflow::load(manifest, runtime, entities)
        .unwrap()
        .saga
}

/// The payload step as a native closure (the baseline).
fn native_payload(step: u64, fail: bool) -> Arc<dyn Step> {
    Arc::new(FnStep::new(move |input: Json, _| async move {
        if fail {
            return Err(StepFailure::new(
                FailureKind::Unknown,
                format!("step {step} failed on purpose"),
            ));
        }
        let prev: Value = serde_json::from_str(input.text()).unwrap();
        let seq = prev["seq"].as_u64().unwrap_or(0) + 1;
        let base = prev["base"]
            .as_u64()
            .or_else(|| prev["id"].as_u64())
            .unwrap_or(0);
        let items: Vec<Value> = (0..18u64)
            .map(|j| json!({"k": format!("s{step}_k{j}"), "v": (seq * 31 + j * 7 + base) % 100_003, "tag": format!("{base}-{step}-{j}-xxxxxxxxxxxx")}))
            .collect();
        let id = format!("wf-{base}-step-{step}");
        let output = json!({"step": step, "seq": seq, "base": base, "id": id, "prevId": prev["id"], "items": items});
        Ok(Invoked::Done {
            output: Json::parse(output.to_string()).unwrap(),
            compensation: Some(Json::from_value(json!({"undo": id}))),
        })
    }))
}

/// The same workflow with native steps, configured as the manifest says.
fn native_saga(template: &Saga) -> Saga {
    let workflow = template.shared_workflow();
    let steps = workflow
        .steps
        .iter()
        .map(|spec| {
            let config = spec.policy.config.value();
            native_payload(
                config["step"].as_u64().unwrap(),
                config["fail"].as_bool().unwrap(),
            )
        })
        .collect();
    Saga::new(workflow, steps)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let component = common::guest("payload");
    let runtime = Runtime::new(Default::default(), ComponentCache::new(None)).unwrap();
    let ok = wasm_saga(&runtime, &manifest(dir.path(), &component, false));
    let fail = wasm_saga(&runtime, &manifest(dir.path(), &component, true));
    let native_ok = native_saga(&ok);
    let native_fail = native_saga(&fail);
    let input = || RunRequest::new(Json::from_value(json!({"id": 7, "seq": 0})));

    // Correctness before speed: each saga ends as the case says.
    for (saga, expected) in [
        (&ok, RunStatus::Done),
        (&fail, RunStatus::Reverted),
        (&native_ok, RunStatus::Done),
        (&native_fail, RunStatus::Reverted),
    ] {
        let report = rt.block_on(saga.run(input()));
        assert_eq!(report.status, expected, "{:?}", report.error);
    }
    let wasm_out = rt.block_on(ok.run(input())).output.unwrap();
    let native_out = rt.block_on(native_ok.run(input())).output.unwrap();
    assert_eq!(
        wasm_out, native_out,
        "the guest and the baseline compute the same payload"
    );
    assert!(
        wasm_out.text().len() > 900,
        "~1 KB per step: {}",
        wasm_out.text().len()
    );

    let cases = [
        ("wasm_ok", &ok),
        ("native_ok", &native_ok),
        ("wasm_fail_last", &fail),
        ("native_fail_last", &native_fail),
    ];
    let mut group = c.benchmark_group("linear10");
    group.throughput(Throughput::Elements(1));
    for (name, saga) in cases {
        group.bench_function(name, |b| b.to_async(&rt).iter(|| saga.run(input())));
    }
    group.finish();

    // The same, timed in CPU time of the whole process (all threads): less
    // sensitive than wall time to other load on a shared machine.
    let mut group = c.benchmark_group("linear10_cpu");
    group.throughput(Throughput::Elements(1));
    for (name, saga) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = process_cpu_time();
                for _ in 0..iters {
                    rt.block_on(saga.run(input()));
                }
                process_cpu_time() - start
            })
        });
    }
    group.finish();

    // One call of one step, without the orchestrator: the price of a fresh
    // sandbox (store, instantiation, the guest's work) against a native
    // call, and the floor: the same fresh sandbox for a guest whose invoke
    // returns at once (the probe with `raw-output`, same engine), given
    // the same ~1 KB input a mid-flow step gets.
    let single = current_thread();
    let floor_manifest = dir.path().join("floor.toml");
    std::fs::write(
        &floor_manifest,
        format!(
            "[workflow]\nname = \"floor\"\n\n[steps.floor]\ncomponent = \"{}\"\nconfig = {{ raw-output = \"null\" }}\n\n[[flow]]\nrun = \"floor\"\n",
            common::guest("probe").display()
        ),
    )
    .unwrap();
    let floor = wasm_saga(&runtime, &floor_manifest);
    let mid_flow_input = rt.block_on(ok.run(input())).output.unwrap();
    let mut group = c.benchmark_group("call");
    group.throughput(Throughput::Elements(1));
    for (name, saga) in [
        ("wasm_invoke", &ok),
        ("native_invoke", &native_ok),
        ("floor_invoke", &floor),
    ] {
        let step = saga.step(0);
        let call = step_call(&saga.workflow().steps[0].policy.config);
        group.bench_function(name, |b| {
            b.iter(|| {
                single
                    .block_on(step.invoke(&mid_flow_input, &call))
                    .unwrap()
            })
        });
    }
    group.finish();

    // Durable: every transition journaled in a SQLite state file before the
    // next action, as `host run` does.
    let state_dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("linear10_durable");
    group.throughput(Throughput::Elements(1));
    for (name, durability, samples) in [
        ("wasm_ok", SyncMode::Normal, 100),
        ("wasm_ok_fsync", SyncMode::Full, 10),
    ] {
        let path = state_dir.path().join(format!("{name}.db"));
        let (journal, entities) = wasaga_host::durable::open_state_file(&path, durability).unwrap();
        let host = Host::new(journal, entities, runtime.clone());
        let manifest =
            manifest::load(&manifest(dir.path(), &component, false), &load_options()).unwrap();
        let workflow = Arc::new(
            wasaga_host::workflow::load(manifest, &runtime, host.entities().clone()).unwrap(),
        );
        let report = rt
            .block_on(host.start(&workflow, &[], input(), false))
            .unwrap()
            .report();
        assert_eq!(report.status, RunStatus::Done);
        group.sample_size(samples);
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { host.start(&workflow, &[], input(), false).await.unwrap() })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("concurrent100");
    group.throughput(Throughput::Elements(100));
    group.sample_size(20);
    for (name, saga) in [("wasm_ok", &ok), ("native_ok", &native_ok)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let runs: Vec<_> = (0..100)
                    .map(|_| {
                        let saga = saga.clone();
                        tokio::spawn(async move { saga.run(input()).await })
                    })
                    .collect();
                for run in runs {
                    run.await.unwrap();
                }
            })
        });
    }
    group.finish();
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A call context like the orchestrator makes for the first attempt.
fn step_call(config: &Json) -> StepCall {
    StepCall {
        workflow: "bench".into(),
        run_id: "run".into(),
        transaction_id: "tx".into(),
        step: "s1".into(),
        node: "s1".into(),
        action: Action::Invoke,
        attempt: 1,
        metadata: Json::from_value(json!({})),
        trace_context: None,
        config: config.clone(),
        deadline: None,
        events: Default::default(),
        outbound: Default::default(),
        fence: None,
    }
}

/// CPU time used by this process so far (user + system, all threads).
fn process_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

criterion_group!(benches, bench);
criterion_main!(benches);
