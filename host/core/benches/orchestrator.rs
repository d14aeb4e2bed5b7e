//! What the orchestrator costs on its own: linear workflows of native steps
//! that do nothing but hand on a ~1 KB payload (events and trace on, as in
//! every run), 10 and 100 steps long, succeeding and with the last step
//! failing (every earlier step compensated). The figure per step is the
//! time per run divided by its steps; the 100-step run's cost per step
//! against the 10-step run's shows whether scheduling stays O(1) per step.
//!
//!     cargo bench -p wasaga-core --bench orchestrator

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use wasaga_core::Json;
use wasaga_core::saga::fixtures::linear;
use wasaga_core::saga::{RunRequest, RunStatus};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let input = Json::from_value(json!({"id": 7, "seq": 0}));
    let mut group = c.benchmark_group("orchestrator");
    for steps in [10, 100] {
        for fail_last in [false, true] {
            let saga = linear(steps, fail_last);
            let report = rt.block_on(saga.run(RunRequest::new(input.clone())));
            let expected = if fail_last {
                RunStatus::Reverted
            } else {
                RunStatus::Done
            };
            assert_eq!(report.status, expected, "{:?}", report.error);
            // Throughput in steps: criterion then reports the time per step.
            group.throughput(Throughput::Elements(steps as u64));
            let name = format!("{}{steps}", if fail_last { "fail_last_" } else { "ok_" });
            group.bench_function(name, |b| {
                b.iter(|| rt.block_on(saga.run(RunRequest::new(input.clone()))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
