//! What a step costs per language: component size, first compile, a cached
//! start, and one call in a fresh sandbox (instantiate + invoke), for the
//! same small step (`validate-brand`; `slugify-brand` for C).
//!
//!     cargo bench -p wasaga-host --bench languages
//!
//! Needs the guest toolchains (see .ci/run): componentize-py, node with
//! `npm ci` in guest-sdk/js, clang with wasi-libc, wit-bindgen-cli.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wasaga_host::capabilities::EntityStore;
use wasaga_host::capabilities::registry::load_options;
use wasaga_host::json::Json;
use wasaga_host::manifest;
use wasaga_host::saga::{Action, StepCall};
use wasaga_host::wasm::{ComponentCache, Runtime};

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} failed");
}

/// Builds each language's step; returns (language, component, input).
fn build_all() -> Vec<(&'static str, PathBuf, serde_json::Value)> {
    let brand = repo().join("example-plugins/brand");
    let sdk_js = repo().join("guest-sdk/js/build.mjs");
    run(Command::new(env!("CARGO")).current_dir(repo()).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "validate-brand",
    ]));
    let python = target().join("python/validate_brand.wasm");
    run(Command::new("componentize-py")
        .current_dir(&brand)
        .args([
            "-d",
            "../../wit",
            "-w",
            "step",
            "componentize",
            "validate_brand",
            "-p",
            "python",
            "-p",
            "../../guest-sdk/python",
            "-o",
        ])
        .arg(&python));
    let quickjs = target().join("js/validate_brand.wasm");
    run(Command::new("node")
        .arg(&sdk_js)
        .arg(brand.join("js/validate-brand.js"))
        .arg(&quickjs));
    let spidermonkey = target().join("js/validate_brand.spidermonkey.wasm");
    run(Command::new("node")
        .arg(&sdk_js)
        .args(["--engine", "spidermonkey"])
        .arg(brand.join("js/validate-brand.js"))
        .arg(&spidermonkey));
    run(Command::new("sh").arg(brand.join("c/build.sh")));
    let name = json!({"name": "Acme"});
    vec![
        (
            "rust",
            target().join("wasm32-wasip2/release/validate_brand.wasm"),
            name.clone(),
        ),
        ("python", python, name.clone()),
        ("js-quickjs", quickjs, name.clone()),
        ("js-spidermonkey", spidermonkey, name.clone()),
        ("c", target().join("c/slugify_brand.wasm"), name),
    ]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let steps = build_all();
    let cache = tempfile::tempdir().unwrap();
    let mut table = Vec::new();
    let mut group = c.benchmark_group("language_call");
    group.sample_size(30);
    for (language, path, input) in &steps {
        let size = std::fs::metadata(path).unwrap().len();
        // First compile: a runtime without a cache.
        let cold = Runtime::new(Default::default(), ComponentCache::new(None)).unwrap();
        let started = Instant::now();
        cold.load(path).unwrap();
        let compile = started.elapsed();
        // A cached start: a new runtime finding the compiled code on disk.
        let warm_up = Runtime::new(
            Default::default(),
            ComponentCache::new(Some(cache.path().to_path_buf())),
        )
        .unwrap();
        warm_up.load(path).unwrap();
        let loads: Vec<Duration> = (0..5)
            .map(|_| {
                let runtime = Runtime::new(
                    Default::default(),
                    ComponentCache::new(Some(cache.path().to_path_buf())),
                )
                .unwrap();
                let started = Instant::now();
                let loaded = runtime.load(path).unwrap();
                assert!(loaded.from_cache);
                started.elapsed()
            })
            .collect();
        let cached = median(loads);
        // One call in a fresh sandbox, through the same path as a run.
        let dir = tempfile::tempdir().unwrap();
        let manifest_path = dir.path().join("m.toml");
        std::fs::write(
            &manifest_path,
            format!(
                "[workflow]\nname = \"m\"\n[steps.s]\ncomponent = \"{}\"\n[[flow]]\nrun = \"s\"\n",
                path.display()
            ),
        )
        .unwrap();
        let manifest = manifest::load(&manifest_path, &load_options()).unwrap();
        let saga = wasaga_host::workflow::load(
            manifest,
            &warm_up,
            Arc::new(EntityStore::in_memory().unwrap()),
        )
        .unwrap()
        .saga;
        let step = saga.step(0);
        let input = Json::from_value(input.clone());
        let call = StepCall {
            workflow: "m".into(),
            run_id: "r".into(),
            transaction_id: "t".into(),
            step: "s".into(),
            node: "s".into(),
            action: Action::Invoke,
            attempt: 1,
            metadata: Json::from_value(json!({})),
            trace_context: None,
            config: Json::null(),
            deadline: None,
            events: Default::default(),
            outbound: Default::default(),
            fence: None,
        };
        rt.block_on(step.invoke(&input, &call))
            .expect("the step succeeds");
        let calls: Vec<Duration> = (0..20)
            .map(|_| {
                let started = Instant::now();
                rt.block_on(step.invoke(&input, &call)).unwrap();
                started.elapsed()
            })
            .collect();
        group.bench_function(*language, |b| {
            b.iter(|| rt.block_on(step.invoke(&input, &call)).unwrap())
        });
        table.push((*language, size, compile, cached, median(calls)));
    }
    group.finish();
    println!("\n| language | component | first compile | cached start | a call (fresh sandbox) |");
    println!("|---|---|---|---|---|");
    for (language, size, compile, cached, call) in table {
        println!(
            "| {language} | {:.1} MiB | {:.0} ms | {:.2} ms | {:.0} µs |",
            size as f64 / (1 << 20) as f64,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            call.as_secs_f64() * 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
