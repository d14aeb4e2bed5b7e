//! Starting runs: one run per transaction id (also for concurrent starts and
//! starts awaited as tasks), the manifest kept for the next start, and what a
//! run keeps from its start (pinned components, trace context).

use super::*;

pub(super) fn a_transaction_id_starts_one_run(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    assert!(matches!(
        journal.begin(&new_run("r1", "t1"), &me, LEASE).unwrap(),
        Begin::Started { epoch: 1 }
    ));
    let Begin::Existing(existing) = journal.begin(&new_run("r2", "t1"), &me, LEASE).unwrap() else {
        panic!("the second start finds the first")
    };
    assert_eq!(existing.id, "r1");
    assert_eq!(existing.status, RunStatus::Running);
    assert_eq!(existing.lease_epoch, 1);
    assert_eq!(existing.input.value(), &json!({"a": 1}));
    assert_eq!(
        journal.sources(&existing.manifest_hash).unwrap()[0].1,
        "[workflow]"
    );
    assert_eq!(
        journal.find_transaction("w", "t1").unwrap().unwrap().id,
        "r1"
    );
    assert!(journal.find_transaction("w", "t9").unwrap().is_none());
    assert!(matches!(
        journal.run("nope"),
        Err(JournalError::UnknownRun(_))
    ));
}

pub(super) fn concurrent_starts_of_one_transaction_id_make_one_run(journal: &Arc<dyn Journal>) {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                let begun = journal
                    .begin(&new_run(&format!("r{i}"), "same"), &Owner::current(), LEASE)
                    .unwrap();
                matches!(begun, Begin::Started { .. })
            })
        })
        .collect();
    let started = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|started| *started)
        .count();
    assert_eq!(started, 1);
    let runs = journal.list(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1);
}

/// Starts awaited by tasks (sharing commits on SQLite): of the ones with
/// one transaction id exactly one records a run and the others find it;
/// each of the others records its own; the manifest's files are stored.
pub(super) fn queued_starts_awaited_by_tasks_make_one_run_per_transaction_id(
    journal: &Arc<dyn Journal>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let begun: Vec<(usize, Begin)> = rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    // Even ones share a transaction id; odd ones have their own.
                    let tx = if i % 2 == 0 {
                        "same".to_string()
                    } else {
                        format!("t{i}")
                    };
                    let begun = journal
                        .begin_queued(&new_run(&format!("r{i}"), &tx), &Owner::current(), LEASE)
                        .await
                        .unwrap();
                    (i, begun)
                })
            })
            .collect();
        let mut begun = Vec::new();
        for task in tasks {
            begun.push(task.await.unwrap());
        }
        begun
    });
    let started: Vec<usize> = begun
        .iter()
        .filter(|(_, b)| matches!(b, Begin::Started { epoch: 1 }))
        .map(|(i, _)| *i)
        .collect();
    let shared: Vec<usize> = started.iter().copied().filter(|i| i % 2 == 0).collect();
    assert_eq!(
        shared.len(),
        1,
        "one start of the shared transaction id: {started:?}"
    );
    assert_eq!(started.len(), 9, "{started:?}");
    for (i, begun) in &begun {
        if i % 2 == 0 && *i != shared[0] {
            let Begin::Existing(existing) = begun else {
                panic!("start {i} of the shared transaction id: {begun:?}")
            };
            assert_eq!(existing.id, format!("r{}", shared[0]));
        }
    }
    let runs = journal.list(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 9);
    let run = journal.run(&format!("r{}", shared[0])).unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.input.value(), &json!({"a": 1}));
    assert_eq!(
        journal.sources(&run.manifest_hash).unwrap()[0].1,
        "[workflow]"
    );
}

/// The process that started a manifest's runs keeps starting them after a
/// prune took the manifest with its last run (SQLite deletes it at once;
/// PostgreSQL keeps a manifest used in the last minute): the new run can
/// still be resumed from its manifest, by this process and the start sync
/// or queued.
pub(super) fn a_manifest_pruned_with_its_last_run_is_there_for_the_next_start(
    journal: &Arc<dyn Journal>,
) {
    let me = Owner::current();
    journal.begin(&new_run("r1", "t1"), &me, LEASE).unwrap();
    journal
        .finish("r1", 1, &report("r1", RunStatus::Done))
        .unwrap();
    assert_eq!(journal.prune(now_ms() + 1, None).unwrap(), 1);
    journal.begin(&new_run("r2", "t2"), &me, LEASE).unwrap();
    let run = journal.run("r2").unwrap();
    assert_eq!(
        journal.sources(&run.manifest_hash).unwrap()[0].1,
        "[workflow]"
    );
    journal
        .finish("r2", 1, &report("r2", RunStatus::Done))
        .unwrap();
    assert_eq!(journal.prune(now_ms() + 1, None).unwrap(), 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(journal.begin_queued(&new_run("r3", "t3"), &me, LEASE))
        .unwrap();
    let run = journal.run("r3").unwrap();
    assert_eq!(
        journal.sources(&run.manifest_hash).unwrap()[0].1,
        "[workflow]"
    );
}

pub(super) fn a_run_keeps_its_pinned_components_and_an_operator_can_replace_them(
    journal: &Arc<dyn Journal>,
) {
    journal
        .begin(&new_run("r1", "t1"), &Owner::current(), LEASE)
        .unwrap();
    assert_eq!(journal.run("r1").unwrap().components[0].hash, "abc");
    let changed = [PinnedComponent {
        step: "a".into(),
        path: "/a.wasm".into(),
        hash: "def".into(),
    }];
    journal.set_components("r1", 1, &changed).unwrap();
    assert_eq!(journal.run("r1").unwrap().components, changed);
}

pub(super) fn a_run_keeps_its_trace_context(journal: &Arc<dyn Journal>) {
    let caller =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let traced = NewRun {
        trace_context: Some(caller),
        ..new_run("r1", "t1")
    };
    journal.begin(&traced, &Owner::current(), LEASE).unwrap();
    journal
        .begin(&new_run("r2", "t2"), &Owner::current(), LEASE)
        .unwrap();
    assert_eq!(journal.run("r1").unwrap().trace_context(), Some(caller));
    assert_eq!(journal.run("r2").unwrap().trace_context(), None);
    assert_eq!(
        report_from_journal(journal.as_ref(), "r1")
            .unwrap()
            .trace_id
            .as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}
