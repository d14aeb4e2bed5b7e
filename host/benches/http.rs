//! Outbound HTTP through the host, against the same request from a native
//! client in the same run, on loopback (an in-process server answering a
//! small JSON body):
//!
//! - `native_request`: hyper-util's pooled client, one GET (the floor);
//! - `step_one_request`: a one-step workflow whose sandboxed step makes that
//!   GET through `wasi:http` (grant check, secret swap, idempotency key,
//!   pooled connection, trace note) — a fresh sandbox per call included;
//! - `step_no_request`: the same step making no request, so the difference
//!   is what the request costs inside a step;
//! - `in_flight/1` and `in_flight/32`: calls per second with 1 and 32 such
//!   steps at once.
//!
//!     cargo bench -p wasaga-host --bench http

use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use wasaga_host::capabilities::EntityStore;
use wasaga_host::capabilities::registry::load_options;
use wasaga_host::json::Json;
use wasaga_host::manifest;
use wasaga_host::saga::{RunRequest, RunStatus, Saga};
use wasaga_host::wasm::{ComponentCache, Runtime};

mod common;

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

/// Serves `{"ok":true}` on a free loopback port; returns its base URL.
async fn server() -> String {
    let app = axum::Router::new().route(
        "/ok",
        axum::routing::get(|| async { axum::Json(json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn saga(runtime: &Arc<Runtime>, dir: &Path, url: &str, component: &Path) -> Saga {
    let text = format!(
        "[workflow]\nname = \"bench-http\"\n\n[secrets.key]\nhosts = [\"{url}\"]\n\n[steps.call]\ncomponent = \"{}\"\ngrants = {{ http = [\"{url}\"], secrets = [\"key\"] }}\n\n[[flow]]\nrun = \"call\"\ninput = \"input\"\nas = \"out\"\n\n[output]\nvalue = \"out\"\n",
        component.display()
    );
    let path = dir.join("http.toml");
    std::fs::write(&path, text).unwrap();
    let manifest = manifest::load(&path, &load_options()).unwrap();
    let entities = Arc::new(EntityStore::in_memory().unwrap());
    wasaga_host::workflow::load(manifest, runtime, entities)
        .unwrap()
        .saga
}

fn bench(c: &mut Criterion) {
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("WASAGA_SECRET_KEY", "bench-secret-value") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let url = rt.block_on(server());
    let dir = tempfile::tempdir().unwrap();
    let component = common::guest("http-probe");
    let runtime = Runtime::new(Default::default(), ComponentCache::new(None)).unwrap();
    let saga = saga(&runtime, dir.path(), &url, &component);
    let one = || {
        RunRequest::new(Json::from_value(json!({
            "requests": [{"url": format!("{url}/ok"), "secret": {"name": "key", "in": "header"}}]
        })))
    };
    let plain = || {
        RunRequest::new(Json::from_value(json!({
            "requests": [{"url": format!("{url}/ok")}]
        })))
    };
    let none = || RunRequest::new(Json::from_value(json!({"requests": []})));
    // Correctness first: the step got the answer, and the trace noted it.
    let report = rt.block_on(saga.run(one()));
    assert_eq!(report.status, RunStatus::Done, "{:?}", report.error);
    assert_eq!(report.trace[0].requests.len(), 1);
    assert_eq!(report.trace[0].requests[0].status, Some(200));

    let native = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let target: http::Uri = format!("{url}/ok").parse().unwrap();
    let native_request = || {
        let native = native.clone();
        let target = target.clone();
        async move {
            let response = native.get(target).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"{\"ok\":true}");
        }
    };

    let mut group = c.benchmark_group("outbound");
    group.throughput(Throughput::Elements(1));
    group.bench_function("native_request", |b| b.to_async(&rt).iter(native_request));
    group.bench_function("step_one_request", |b| {
        b.to_async(&rt).iter(|| saga.run(one()))
    });
    group.bench_function("step_one_request_no_secret", |b| {
        b.to_async(&rt).iter(|| saga.run(plain()))
    });
    group.bench_function("step_no_request", |b| {
        b.to_async(&rt).iter(|| saga.run(none()))
    });
    group.finish();

    let mut group = c.benchmark_group("outbound_in_flight");
    for in_flight in [1usize, 32] {
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_with_input(
            BenchmarkId::new("step_one_request", in_flight),
            &in_flight,
            |b, &n| {
                b.to_async(&rt)
                    .iter(|| futures::future::join_all((0..n).map(|_| saga.run(one()))))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("native_request", in_flight),
            &in_flight,
            |b, &n| {
                b.to_async(&rt)
                    .iter(|| futures::future::join_all((0..n).map(|_| native_request())))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
