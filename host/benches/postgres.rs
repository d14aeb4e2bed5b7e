//! Durable 10-step runs (the `payload` guest, ~1 KB of JSON between steps)
//! on PostgreSQL against the SQLite state file, in the same sitting: one
//! run at a time and 100 in flight, spread over 1, 2 and 4 hosts (each a
//! `Host` with its own connection pool), at `normal` and `full` durability.
//! Before measuring it prints the commits (write transactions) each run
//! makes on PostgreSQL, and on SQLite per step with 100 runs in flight
//! (with `full` each is a disk flush: group commit shares them between
//! runs; `WASAGA_GROUP_COMMIT=0` measures without it).
//!
//!     cargo bench -p wasaga-host --bench postgres
//!
//! The server is `WASAGA_TEST_POSTGRES` (default the project machines'
//! `postgres://postgres@127.0.0.1:5432/test`); each backend gets a schema
//! of its own, dropped at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use wasaga_host::capabilities::registry::load_options;
use wasaga_host::durable::{Host, StateLocation};
use wasaga_host::journal::{SqliteJournal, SyncMode};
use wasaga_host::json::Json;
use wasaga_host::manifest;
use wasaga_host::postgres::testing::TestSchema;
use wasaga_host::saga::{RunRequest, RunStatus};
use wasaga_host::wasm::{ComponentCache, Runtime};
use wasaga_host::workflow::LoadedWorkflow;

mod common;

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

/// The bench harness's workflow: 10 payload steps in sequence, each taking
/// the previous one's output (~1 KB).
fn manifest(dir: &Path, component: &Path) -> PathBuf {
    let mut text = String::from("[workflow]\nname = \"linear10\"\n\n");
    for i in 1..=10 {
        text += &format!(
            "[steps.s{i}]\ncomponent = \"{}\"\nconfig = {{ step = {i}, fail = false }}\n\n",
            component.display()
        );
    }
    for i in 1..=10 {
        let input = if i == 1 {
            "input".to_string()
        } else {
            format!("p{}", i - 1)
        };
        text += &format!("[[flow]]\nrun = \"s{i}\"\ninput = \"{input}\"\nas = \"p{i}\"\n\n");
    }
    text += "[output]\nvalue = \"p10\"\n";
    let path = dir.join("linear10.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn input() -> RunRequest {
    RunRequest::new(Json::from_value(json!({"id": 7, "seq": 0})))
}

/// `n` hosts on `location`, and the workflow bound to each one's entities.
fn hosts(
    location: &StateLocation,
    sync: SyncMode,
    n: usize,
    runtime: &Arc<Runtime>,
    manifest_path: &Path,
) -> Vec<(Host, Arc<LoadedWorkflow>)> {
    (0..n)
        .map(|_| {
            let (journal, entities) = wasaga_host::durable::open_state(location, sync).unwrap();
            let host = Host::new(journal, entities, runtime.clone());
            let manifest = manifest::load(manifest_path, &load_options()).unwrap();
            let workflow = Arc::new(
                wasaga_host::workflow::load(manifest, runtime, host.entities().clone()).unwrap(),
            );
            (host, workflow)
        })
        .collect()
}

/// The database's next transaction id: every transaction that writes
/// takes one, so the difference between two readings (less the reading's
/// own) counts the commits in between.
async fn next_xid(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .unwrap();
    row.get(0)
}

fn bench(c: &mut Criterion) {
    let component = common::guest("payload");
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = manifest(dir.path(), &component);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let runtime = Runtime::new(Default::default(), ComponentCache::new(None)).unwrap();
    let schema = TestSchema::new();
    let postgres = StateLocation::Postgres(schema.url.clone());
    let sqlite = StateLocation::File(dir.path().join("state.db"));

    // Commits per run on PostgreSQL (the journal's round trips: one per
    // append, status change and finish; begin is one transaction).
    rt.block_on(async {
        let (host, workflow) = hosts(&postgres, SyncMode::Normal, 1, &runtime, &manifest_path)
            .pop()
            .unwrap();
        host.start(&workflow, &[], input(), false).await.unwrap();
        let before = next_xid(&schema.url).await;
        const RUNS: i64 = 50;
        for _ in 0..RUNS {
            let report = host
                .start(&workflow, &[], input(), false)
                .await
                .unwrap()
                .report();
            assert_eq!(report.status, RunStatus::Done);
        }
        // Less the reading's own transaction.
        let per_run = (next_xid(&schema.url).await - before - 1) as f64 / RUNS as f64;
        eprintln!(
            "PostgreSQL: {per_run:.1} commits per 10-step run ({:.2} per step)",
            per_run / 10.0
        );
    });

    // Commits per step on SQLite: one run at a time, and 100 in flight.
    for sync in [SyncMode::Normal, SyncMode::Full] {
        let file = StateLocation::File(dir.path().join(format!("commits-{sync:?}.db")));
        let (host, workflow) = hosts(&file, sync, 1, &runtime, &manifest_path)
            .pop()
            .unwrap();
        let host = Arc::new(host);
        for in_flight in [1, 100] {
            let batch = || async {
                let runs: Vec<_> = (0..in_flight)
                    .map(|_| {
                        let (host, workflow) = (host.clone(), workflow.clone());
                        tokio::spawn(async move {
                            host.start(&workflow, &[], input(), false).await.unwrap()
                        })
                    })
                    .collect();
                for run in runs {
                    assert_eq!(run.await.unwrap().report().status, RunStatus::Done);
                }
            };
            rt.block_on(batch());
            let before = SqliteJournal::commits();
            const BATCHES: u64 = 5;
            for _ in 0..BATCHES {
                rt.block_on(batch());
            }
            let per_step = (SqliteJournal::commits() - before) as f64
                / (BATCHES * in_flight as u64 * 10) as f64;
            eprintln!("SQLite {sync:?}, {in_flight} in flight: {per_step:.3} commits per step");
        }
    }

    let mut group = c.benchmark_group("durable_sequential");
    group.throughput(Throughput::Elements(1));
    for (name, location, sync, samples) in [
        ("sqlite_normal", &sqlite, SyncMode::Normal, 60),
        ("sqlite_full", &sqlite, SyncMode::Full, 10),
        ("postgres_normal", &postgres, SyncMode::Normal, 30),
        ("postgres_full", &postgres, SyncMode::Full, 10),
    ] {
        let (host, workflow) = hosts(location, sync, 1, &runtime, &manifest_path)
            .pop()
            .unwrap();
        group.sample_size(samples);
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { host.start(&workflow, &[], input(), false).await.unwrap() })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("durable_inflight100");
    group.throughput(Throughput::Elements(100));
    group.sample_size(10);
    for (name, location, sync, n) in [
        ("sqlite_normal_1host", &sqlite, SyncMode::Normal, 1),
        ("sqlite_full_1host", &sqlite, SyncMode::Full, 1),
        ("postgres_normal_1host", &postgres, SyncMode::Normal, 1),
        ("postgres_normal_2hosts", &postgres, SyncMode::Normal, 2),
        ("postgres_normal_4hosts", &postgres, SyncMode::Normal, 4),
        ("postgres_full_4hosts", &postgres, SyncMode::Full, 4),
    ] {
        let hosts: Vec<(Arc<Host>, Arc<LoadedWorkflow>)> =
            hosts(location, sync, n, &runtime, &manifest_path)
                .into_iter()
                .map(|(host, workflow)| (Arc::new(host), workflow))
                .collect();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let runs: Vec<_> = (0..100)
                    .map(|i| {
                        let (host, workflow) = hosts[i % hosts.len()].clone();
                        tokio::spawn(async move {
                            host.start(&workflow, &[], input(), false).await.unwrap()
                        })
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

criterion_group!(benches, bench);
criterion_main!(benches);
