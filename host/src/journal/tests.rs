//! The journal's behaviour, tested from one source on both backends: a real
//! SQLite file and a real PostgreSQL server (a schema of its own per test),
//! so a behaviour cannot exist on one and not the other.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::json::Json;
use crate::saga::{Action, CallRecord, RunReport, RunStatus};
use crate::telemetry::TraceContext;

type Guard = Box<dyn std::any::Any>;

fn open_sqlite() -> (Arc<dyn Journal>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let journal = SqliteJournal::open(&dir.path().join("state.db"), SyncMode::Normal).unwrap();
    (Arc::new(journal), Box::new(dir))
}

fn open_postgres() -> (Arc<dyn Journal>, Guard) {
    let schema = crate::postgres::testing::TestSchema::new();
    let database = crate::postgres::Database::connect(&schema.url, SyncMode::Normal).unwrap();
    (Arc::new(PgJournal::new(database)), Box::new(schema))
}

/// Each test below, once per backend.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                let (journal, _guard) = super::open_sqlite();
                super::$test(&journal);
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                let (journal, _guard) = super::open_postgres();
                super::$test(&journal);
            })*
        }
    };
}

on_both_backends!(
    a_transaction_id_starts_one_run,
    concurrent_starts_of_one_transaction_id_make_one_run,
    records_come_back_as_a_history,
    an_input_that_is_the_previous_output_reads_back_whole,
    queued_writes_awaited_by_tasks_are_committed_and_fenced,
    queued_starts_awaited_by_tasks_make_one_run_per_transaction_id,
    finishing_releases_the_lease_and_pruning_removes_old_runs,
    a_manifest_pruned_with_its_last_run_is_there_for_the_next_start,
    a_live_owner_keeps_its_run_and_a_dead_one_loses_it,
    a_run_keeps_its_pinned_components_and_an_operator_can_replace_them,
    a_run_keeps_its_trace_context,
    a_host_whose_lease_was_taken_over_writes_nothing_more,
    orphaned_runs_are_claimed_in_batches_and_live_ones_are_left,
    renewing_extends_only_the_runs_named,
    only_a_finished_run_is_reopened_and_cancels_are_seen,
    runs_are_listed_newest_first_by_status_and_workflow,
    a_recorder_past_the_hosts_last_renewal_renews_its_lease_or_stops,
    a_schedule_remembers_its_last_tick_and_sees_its_unfinished_runs,
    runs_beyond_a_keys_limit_queue_and_start_by_priority_as_slots_free,
    waiting_runs_are_due_at_their_wake_up_time_and_reruns_are_listed_by_their_original,
    taking_a_run_over_from_a_dead_host_counts_a_crash_and_reopening_clears_them,
);

pub(super) fn new_run(id: &str, tx: &str) -> NewRun {
    NewRun {
        trace_context: None,
        id: id.into(),
        transaction_id: tx.into(),
        workflow: "w".into(),
        manifest: "/m.toml".into(),
        sources: vec![("/m.toml".into(), "[workflow]".into())],
        extension_dirs: vec![],
        input: Json::from_value(json!({"a": 1})),
        metadata: Json::from_value(json!({})),
        idempotent: true,
        components: vec![PinnedComponent {
            step: "a".into(),
            path: "/a.wasm".into(),
            hash: "abc".into(),
        }],
        rerun_of: None,
        tick: None,
        queue: None,
    }
}

pub(super) fn report(id: &str, status: RunStatus) -> RunReport {
    RunReport {
        run: id.into(),
        workflow: "w".into(),
        transaction_id: id.into(),
        status,
        partial: false,
        output: Some(Json::from_value(json!(1))),
        error: None,
        errors: vec![],
        trace: vec![],
        events: vec![],
        all_events: vec![],
        duration_ms: 1.0,
        wake_at: None,
        rerun_of: None,
        reruns: Vec::new(),
        tick: None,
        trace_id: None,
    }
}

pub(super) fn started(node: &str) -> RecordKind {
    RecordKind::Started {
        node: node.into(),
        step: node.into(),
        action: Action::Invoke,
        attempt: 1,
        input: Some(Json::from_value(json!({"n": node}))),
    }
}

fn finished(node: &str) -> RecordKind {
    RecordKind::Finished {
        node: node.into(),
        action: Action::Invoke,
        attempt: 1,
        record: CallRecord::Done {
            output: Json::from_value(json!("out")),
            compensation: None,
        },
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// A host on another machine (alive as far as this one can tell).
fn elsewhere(name: &str) -> Owner {
    Owner::from_id(format!("other-machine-{name}:1:1"))
}

/// A process on this machine that is gone.
fn ghost() -> Owner {
    let me = Owner::current();
    let host = me.id().rsplitn(3, ':').nth(2).unwrap().to_string();
    Owner::from_id(format!("{host}:{}:1", u32::MAX - 3))
}

fn a_transaction_id_starts_one_run(journal: &Arc<dyn Journal>) {
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

fn concurrent_starts_of_one_transaction_id_make_one_run(journal: &Arc<dyn Journal>) {
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
fn queued_starts_awaited_by_tasks_make_one_run_per_transaction_id(journal: &Arc<dyn Journal>) {
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

fn records_come_back_as_a_history(journal: &Arc<dyn Journal>) {
    journal
        .begin(&new_run("r1", "t1"), &Owner::current(), LEASE)
        .unwrap();
    assert!(!journal.append("r1", 1, &[(1, started("a"))]).unwrap());
    journal
        .append(
            "r1",
            1,
            &[
                (2, finished("a")),
                (
                    3,
                    RecordKind::Event(crate::saga::Event {
                        name: "e".into(),
                        data: Json::from_value(json!({"x": 1})),
                        step: Some("a".into()),
                        lifecycle: false,
                    }),
                ),
            ],
        )
        .unwrap();
    let history = journal.history("r1").unwrap();
    let call = history.call("a", Action::Invoke).unwrap();
    assert_eq!(call.attempts, 1);
    assert_eq!(
        call.settled,
        Some((
            2,
            CallRecord::Done {
                output: Json::from_value(json!("out")),
                compensation: None,
            }
        ))
    );
    assert_eq!(history.last_seq, 3);
    assert_eq!(history.events.len(), 1);
    let records = journal.records("r1").unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let RecordKind::Started { input, .. } = &records[0].kind else {
        panic!("the first record is the start");
    };
    assert_eq!(input.as_ref().unwrap().value(), &json!({"n": "a"}));
    // A sequence number is written once.
    assert!(journal.append("r1", 1, &[(3, started("b"))]).is_err());
    assert_eq!(journal.records("r1").unwrap().len(), 3);
    assert!(matches!(
        journal.append("nope", 1, &[(1, started("a"))]),
        Err(JournalError::UnknownRun(_))
    ));
}

/// The usual flow's write (the previous call's finished record with the
/// next start, whose input is that output) reads back with the input whole,
/// however it is stored.
fn an_input_that_is_the_previous_output_reads_back_whole(journal: &Arc<dyn Journal>) {
    journal
        .begin(&new_run("r1", "t1"), &Owner::current(), LEASE)
        .unwrap();
    let payload = json!({"items": (0..40).map(|i| json!({"k": i})).collect::<Vec<_>>()});
    let output = Json::from_value(payload.clone());
    let start = |node: &str| RecordKind::Started {
        node: node.into(),
        step: node.into(),
        action: Action::Invoke,
        attempt: 1,
        input: Some(output.clone()),
    };
    let done = |node: &str| RecordKind::Finished {
        node: node.into(),
        action: Action::Invoke,
        attempt: 1,
        record: CallRecord::Done {
            output: output.clone(),
            compensation: None,
        },
    };
    journal.append("r1", 1, &[(1, start("a"))]).unwrap();
    journal
        .append("r1", 1, &[(2, done("a")), (3, start("b"))])
        .unwrap();
    journal
        .finish_with("r1", 1, &[(4, done("b"))], &report("r1", RunStatus::Done))
        .unwrap();
    let inputs: Vec<(u64, serde_json::Value)> = journal
        .records("r1")
        .unwrap()
        .into_iter()
        .filter_map(|record| match record.kind {
            RecordKind::Started { input, .. } => Some((record.seq, input.unwrap().value().clone())),
            _ => None,
        })
        .collect();
    assert_eq!(inputs, [(1, payload.clone()), (3, payload)]);
}

/// The writes a run's task awaits (`append_queued`, `finish_queued`):
/// many runs' at once are each committed, in order, and read back; a run's
/// former holder's are refused like its synchronous ones.
fn queued_writes_awaited_by_tasks_are_committed_and_fenced(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const RUNS: usize = 20;
    for i in 0..RUNS {
        journal
            .begin(&new_run(&format!("r{i}"), &format!("t{i}")), &me, LEASE)
            .unwrap();
    }
    rt.block_on(async {
        let tasks: Vec<_> = (0..RUNS)
            .map(|i| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    let run = format!("r{i}");
                    for seq in 1..=5u64 {
                        let node = format!("n{seq}");
                        let cancel = journal
                            .append_queued(&run, 1, &[(seq, started(&node))])
                            .await
                            .unwrap();
                        assert!(!cancel);
                    }
                    journal
                        .finish_queued(
                            &run,
                            1,
                            &[(6, finished("n5"))],
                            &report(&run, RunStatus::Done),
                        )
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    for i in 0..RUNS {
        let run = format!("r{i}");
        let seqs: Vec<u64> = journal
            .records(&run)
            .unwrap()
            .iter()
            .map(|record| record.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "{run}");
        assert_eq!(journal.run(&run).unwrap().status, RunStatus::Done);
    }
    // Taken over: the former holder's queued writes change nothing.
    let paused = elsewhere("paused");
    journal
        .begin(&new_run("late", "t-late"), &paused, Duration::ZERO)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(journal.claim("late", &me, LEASE).unwrap(), Some(2));
    rt.block_on(async {
        let appended = journal.append_queued("late", 1, &[(1, started("a"))]).await;
        assert!(
            matches!(appended, Err(JournalError::LeaseLost(ref run)) if run == "late"),
            "{appended:?}"
        );
        let finished = journal
            .finish_queued("late", 1, &[], &report("late", RunStatus::Done))
            .await;
        assert!(
            matches!(finished, Err(JournalError::LeaseLost(_))),
            "{finished:?}"
        );
    });
    assert!(journal.records("late").unwrap().is_empty());
    assert_eq!(journal.run("late").unwrap().status, RunStatus::Running);
}

fn finishing_releases_the_lease_and_pruning_removes_old_runs(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    journal.begin(&new_run("r1", "t1"), &me, LEASE).unwrap();
    journal.append("r1", 1, &[(1, started("a"))]).unwrap();
    journal
        .finish("r1", 1, &report("r1", RunStatus::Done))
        .unwrap();
    let run = journal.run("r1").unwrap();
    assert_eq!(run.status, RunStatus::Done);
    assert_eq!(run.output.unwrap().value(), &json!(1));
    assert!(run.finished_at.is_some());
    assert!(run.lease_owner.is_none());
    assert_eq!(
        journal.claim("r1", &me, Duration::from_secs(1)).unwrap(),
        None,
        "a finished run is not claimed"
    );
    journal.begin(&new_run("r2", "t2"), &me, LEASE).unwrap();
    assert_eq!(journal.prune(now_ms() + 1, Some("other")).unwrap(), 0);
    assert_eq!(journal.prune(now_ms() + 1, None).unwrap(), 1);
    assert!(matches!(
        journal.run("r1"),
        Err(JournalError::UnknownRun(_))
    ));
    assert!(journal.records("r1").unwrap().is_empty());
    // The unfinished run stays, with its pinned manifest.
    let kept = journal.run("r2").unwrap();
    assert!(journal.sources(&kept.manifest_hash).is_ok());
}

/// The process that started a manifest's runs keeps starting them after a
/// prune took the manifest with its last run (SQLite deletes it at once;
/// PostgreSQL keeps a manifest used in the last minute): the new run can
/// still be resumed from its manifest, by this process and the start sync
/// or queued.
fn a_manifest_pruned_with_its_last_run_is_there_for_the_next_start(journal: &Arc<dyn Journal>) {
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

fn a_live_owner_keeps_its_run_and_a_dead_one_loses_it(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    journal
        .begin(&new_run("r1", "t1"), &elsewhere("a"), LEASE)
        .unwrap();
    assert_eq!(
        journal.claim("r1", &me, LEASE).unwrap(),
        None,
        "a live holder keeps its run"
    );
    // A dead process on this machine holds r2: it can be taken at once.
    journal
        .begin(&new_run("r2", "t2"), &ghost(), LEASE)
        .unwrap();
    assert_eq!(journal.claim("r2", &me, LEASE).unwrap(), Some(2));
    let r2 = journal.run("r2").unwrap();
    assert_eq!(r2.lease_owner.as_deref(), Some(me.id()));
    assert_eq!(r2.lease_epoch, 2);
    // An expired lease is free to anyone.
    journal
        .begin(&new_run("r3", "t3"), &elsewhere("b"), Duration::ZERO)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(journal.claim("r3", &me, LEASE).unwrap(), Some(2));
}

fn a_run_keeps_its_pinned_components_and_an_operator_can_replace_them(journal: &Arc<dyn Journal>) {
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

fn a_run_keeps_its_trace_context(journal: &Arc<dyn Journal>) {
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

/// The fence: once another host claimed the run (its lease expired while
/// this one was paused), every write of the former holder fails with
/// `LeaseLost` and changes nothing.
fn a_host_whose_lease_was_taken_over_writes_nothing_more(journal: &Arc<dyn Journal>) {
    let (paused, survivor) = (elsewhere("paused"), Owner::current());
    journal
        .begin(&new_run("r1", "t1"), &paused, Duration::ZERO)
        .unwrap();
    journal.append("r1", 1, &[(1, started("a"))]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(journal.claim("r1", &survivor, LEASE).unwrap(), Some(2));
    // The paused host wakes up and goes on writing under epoch 1.
    let lost = |result: Result<(), JournalError>| {
        assert!(
            matches!(result, Err(JournalError::LeaseLost(ref run)) if run == "r1"),
            "{result:?}"
        )
    };
    lost(journal.append("r1", 1, &[(2, finished("a"))]).map(|_| ()));
    lost(journal.set_status("r1", 1, RunStatus::Compensating));
    lost(journal.set_components("r1", 1, &[]));
    lost(journal.finish("r1", 1, &report("r1", RunStatus::Done)));
    // Its end with its last records: neither is written.
    lost(journal.finish_with(
        "r1",
        1,
        &[(2, finished("a"))],
        &report("r1", RunStatus::Done),
    ));
    let run = journal.run("r1").unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.lease_owner.as_deref(), Some(survivor.id()));
    assert_eq!(run.components.len(), 1);
    assert_eq!(journal.records("r1").unwrap().len(), 1);
    // The new holder writes under its epoch.
    journal.append("r1", 2, &[(2, finished("a"))]).unwrap();
    journal
        .finish("r1", 2, &report("r1", RunStatus::Done))
        .unwrap();
    assert_eq!(journal.run("r1").unwrap().status, RunStatus::Done);
    assert!(matches!(
        journal.set_status("nope", 1, RunStatus::Running),
        Err(JournalError::UnknownRun(_))
    ));
    assert!(matches!(
        journal.finish_with(
            "nope",
            1,
            &[(1, started("a"))],
            &report("nope", RunStatus::Done)
        ),
        Err(JournalError::UnknownRun(_))
    ));
}

fn orphans(claimed: &[(String, u64)]) -> Vec<&str> {
    let mut runs: Vec<&str> = claimed.iter().map(|(run, _)| run.as_str()).collect();
    runs.sort();
    runs
}

fn orphaned_runs_are_claimed_in_batches_and_live_ones_are_left(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    journal
        .begin(&new_run("live", "t0"), &elsewhere("a"), LEASE)
        .unwrap();
    journal
        .begin(&new_run("dead1", "t1"), &ghost(), LEASE)
        .unwrap();
    journal
        .begin(&new_run("dead2", "t2"), &ghost(), LEASE)
        .unwrap();
    journal
        .begin(&new_run("expired", "t3"), &elsewhere("b"), Duration::ZERO)
        .unwrap();
    journal.begin(&new_run("mine", "t4"), &me, LEASE).unwrap();
    journal
        .begin(&new_run("skipped", "t5"), &ghost(), LEASE)
        .unwrap();
    // Waiting and finished runs are not orphans.
    journal
        .begin(&new_run("waiting", "t6"), &ghost(), LEASE)
        .unwrap();
    journal
        .finish("waiting", 1, &report("waiting", RunStatus::Waiting))
        .unwrap();
    journal
        .begin(&new_run("done", "t7"), &ghost(), LEASE)
        .unwrap();
    journal
        .finish("done", 1, &report("done", RunStatus::Done))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let skip = ["skipped".to_string()];
    let first = journal.claim_orphans(&me, LEASE, 2, &skip).unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let second = journal.claim_orphans(&me, LEASE, 10, &skip).unwrap();
    let mut all = [first.clone(), second.clone()].concat();
    assert_eq!(orphans(&all), ["dead1", "dead2", "expired"]);
    assert!(all.iter().all(|(_, epoch)| *epoch == 2), "{all:?}");
    // A second host finds nothing left: each orphan goes to one host.
    all = journal
        .claim_orphans(&elsewhere("c"), LEASE, 10, &[])
        .unwrap();
    assert_eq!(orphans(&all), ["skipped"]);
    assert_eq!(
        journal.run("dead1").unwrap().lease_owner.as_deref(),
        Some(me.id())
    );
    assert_eq!(
        journal.run("live").unwrap().lease_owner.as_deref(),
        Some(elsewhere("a").id())
    );
}

fn renewing_extends_only_the_runs_named(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    journal
        .begin(&new_run("kept", "t1"), &me, Duration::from_millis(1))
        .unwrap();
    journal
        .begin(&new_run("dropped", "t2"), &me, Duration::from_millis(1))
        .unwrap();
    let renewed = journal
        .renew(
            &me,
            Duration::from_secs(60),
            &["kept".to_string(), "nope".to_string()],
        )
        .unwrap();
    assert_eq!(renewed, ["kept"]);
    assert!(
        journal
            .renew(&me, Duration::from_secs(60), &[])
            .unwrap()
            .is_empty()
    );
    let until = |run: &str| journal.run(run).unwrap().lease_until.unwrap();
    assert!(until("kept") > now_ms() + 50_000);
    assert!(until("dropped") < now_ms() + 1_000);
    // Another owner's renewal touches nothing of this one's.
    journal
        .renew(
            &elsewhere("a"),
            Duration::from_secs(600),
            &["dropped".to_string()],
        )
        .unwrap();
    assert!(until("dropped") < now_ms() + 1_000);
}

fn only_a_finished_run_is_reopened_and_cancels_are_seen(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    journal.begin(&new_run("r1", "t1"), &me, LEASE).unwrap();
    assert_eq!(
        journal
            .reopen("r1", RunStatus::Done, RunStatus::Compensating, &me, LEASE)
            .unwrap(),
        None,
        "a running run is not reopened"
    );
    assert!(!journal.cancel_requested("r1").unwrap());
    journal.request_cancel("r1").unwrap();
    assert!(journal.cancel_requested("r1").unwrap());
    assert!(
        journal.append("r1", 1, &[(1, started("a"))]).unwrap(),
        "an append reads the cancel in its transaction"
    );
    journal
        .finish("r1", 1, &report("r1", RunStatus::Done))
        .unwrap();
    assert_eq!(
        journal
            .reopen("r1", RunStatus::Done, RunStatus::Compensating, &me, LEASE)
            .unwrap(),
        Some(2)
    );
    let reopened = journal.run("r1").unwrap();
    assert_eq!(reopened.status, RunStatus::Compensating);
    assert_eq!(
        reopened.lease_owner.as_deref(),
        Some(me.id()),
        "leased at once: no sweep takes it before its compensation"
    );
    assert!(
        journal
            .claim_orphans(&elsewhere("a"), LEASE, 10, &[])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        journal
            .reopen("r1", RunStatus::Done, RunStatus::Compensating, &me, LEASE)
            .unwrap(),
        None,
        "reopened once"
    );
    assert!(matches!(
        journal.request_cancel("nope"),
        Err(JournalError::UnknownRun(_))
    ));
}

fn runs_are_listed_newest_first_by_status_and_workflow(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    for i in 0..5 {
        let id = format!("r{i}");
        journal.begin(&new_run(&id, &id), &me, LEASE).unwrap();
        if i % 2 == 0 {
            journal
                .finish(&id, 1, &report(&id, RunStatus::Done))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ids = |filter: RunFilter| -> Vec<String> {
        journal
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(RunFilter::default()), ["r4", "r3", "r2", "r1", "r0"]);
    assert_eq!(
        ids(RunFilter {
            status: Some(RunStatus::Done),
            ..Default::default()
        }),
        ["r4", "r2", "r0"]
    );
    assert_eq!(
        ids(RunFilter {
            limit: Some(2),
            before: Some("r3".into()),
            ..Default::default()
        }),
        ["r2", "r1"]
    );
    assert!(
        ids(RunFilter {
            workflow: Some("other".into()),
            ..Default::default()
        })
        .is_empty()
    );
}

/// A host whose renewals stopped (cut off from the journal, or starved)
/// does not count on its lease past its last renewal: before it writes, the
/// run's recorder renews the lease itself, and stops the run (writing
/// nothing) once another host holds it.
fn a_recorder_past_the_hosts_last_renewal_renews_its_lease_or_stops(journal: &Arc<dyn Journal>) {
    use crate::saga::{CallStart, Recorder};
    let me = Owner::current();
    journal
        .begin(&new_run("r1", "t1"), &me, Duration::from_millis(1))
        .unwrap();
    let stale = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let recorder = JournalRecorder::new(journal.clone(), "r1", 1, 0, None).kept(LeaseKeeper {
        owner: me.clone(),
        lease: LEASE,
        valid_until: stale.clone(),
    });
    let start = |node: &'static str| CallStart {
        node,
        step: node,
        action: Action::Invoke,
        attempt: 1,
        input: None,
    };
    // Still this host's (expired, but no one took it): renewed, written.
    recorder.call_started(&start("a")).unwrap();
    assert!(journal.run("r1").unwrap().lease_until.unwrap() > now_ms() + 20_000);
    assert_eq!(journal.records("r1").unwrap().len(), 1);
    // Its lease lapses (renewed for no time) and another host takes it.
    journal
        .renew(&me, Duration::ZERO, &["r1".to_string()])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    journal
        .claim("r1", &elsewhere("b"), LEASE)
        .unwrap()
        .unwrap();
    assert!(recorder.call_started(&start("b")).is_err());
    assert!(recorder.lost());
    assert_eq!(journal.records("r1").unwrap().len(), 1, "nothing written");
}

fn waiting_runs_are_due_at_their_wake_up_time_and_reruns_are_listed_by_their_original(
    journal: &Arc<dyn Journal>,
) {
    let me = Owner::current();
    let now = now_ms();
    let pause = |id: &str, wake_at: Option<i64>| {
        journal.begin(&new_run(id, id), &me, LEASE).unwrap();
        let mut waiting = report(id, RunStatus::Waiting);
        waiting.output = None;
        waiting.wake_at = wake_at;
        journal.finish(id, 1, &waiting).unwrap();
    };
    pause("later", Some(now + 60_000));
    pause("soon", Some(now - 10));
    pause("sooner", Some(now - 20));
    pause("answer-only", None);
    assert_eq!(journal.due(now, 10).unwrap(), ["sooner", "soon"]);
    assert_eq!(journal.due(now, 1).unwrap(), ["sooner"]);
    assert_eq!(journal.run("soon").unwrap().wake_at, Some(now - 10));
    // Once it runs again it is not due, whatever its old time said.
    let epoch = journal.claim("soon", &me, LEASE).unwrap().unwrap();
    journal
        .set_status("soon", epoch, RunStatus::Running)
        .unwrap();
    assert_eq!(journal.due(now, 10).unwrap(), ["sooner"]);
    assert_eq!(journal.due(now + 60_000, 10).unwrap(), ["sooner", "later"]);

    let mut rerun = new_run("again", "again");
    rerun.rerun_of = Some("later".into());
    journal.begin(&rerun, &me, LEASE).unwrap();
    assert_eq!(
        journal.run("again").unwrap().rerun_of.as_deref(),
        Some("later")
    );
    let reruns: Vec<String> = journal
        .list(&RunFilter {
            rerun_of: Some("later".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(reruns, ["again"]);
}

fn taking_a_run_over_from_a_dead_host_counts_a_crash_and_reopening_clears_them(
    journal: &Arc<dyn Journal>,
) {
    let me = Owner::current();
    // Its holder is gone (an expired lease on another machine).
    journal
        .begin(&new_run("r1", "r1"), &elsewhere("dead"), Duration::ZERO)
        .unwrap();
    journal
        .begin(&new_run("r2", "r2"), &elsewhere("dead"), Duration::ZERO)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let epoch = journal.claim("r1", &me, LEASE).unwrap().unwrap();
    assert_eq!(journal.run("r1").unwrap().crashes, 1);
    // Claimed again by its own holder: no crash.
    let epoch = journal.claim("r1", &me, LEASE).unwrap().unwrap_or(epoch);
    assert_eq!(journal.run("r1").unwrap().crashes, 1);
    let claimed = journal.claim_orphans(&me, LEASE, 10, &[]).unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(journal.run("r2").unwrap().crashes, 1);
    let mut failed = report("r1", RunStatus::Failed);
    failed.output = None;
    journal.finish("r1", epoch, &failed).unwrap();
    let reopened = journal
        .reopen("r1", RunStatus::Failed, RunStatus::Running, &me, LEASE)
        .unwrap();
    assert!(reopened.is_some());
    let record = journal.run("r1").unwrap();
    assert_eq!((record.status, record.crashes), (RunStatus::Running, 0));
}

fn a_schedule_remembers_its_last_tick_and_sees_its_unfinished_runs(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    let state = |workflow: &str, pattern: &str, initial: i64| {
        journal.schedule_state(workflow, pattern, initial).unwrap()
    };
    let at = |last_tick: i64, pending_tick: Option<i64>| ScheduleState {
        last_tick,
        pending_tick,
    };
    // The first look sets the schedule's start; later ones read it.
    assert_eq!(state("w", "* * * * *", 1_000), at(1_000, None));
    assert_eq!(state("w", "* * * * *", 5_000), at(1_000, None));
    assert_eq!(state("other", "* * * * *", 7), at(7, None));
    // Of two hosts deciding from one state, one moves it on.
    assert!(
        journal
            .decide_schedule("w", 1_000, 2_000, Some(2_000))
            .unwrap()
    );
    assert!(
        !journal
            .decide_schedule("w", 1_000, 2_000, Some(2_000))
            .unwrap()
    );
    assert_eq!(state("w", "* * * * *", 0), at(2_000, Some(2_000)));
    // While a tick is pending, nothing else is decided.
    assert!(!journal.decide_schedule("w", 2_000, 3_000, None).unwrap());
    journal.settle_schedule("w", 1_500).unwrap();
    assert_eq!(state("w", "* * * * *", 0), at(2_000, Some(2_000)));
    journal.settle_schedule("w", 2_000).unwrap();
    assert_eq!(state("w", "* * * * *", 0), at(2_000, None));
    // A dropped tick moves it on with nothing pending.
    assert!(journal.decide_schedule("w", 2_000, 3_000, None).unwrap());
    assert_eq!(state("w", "* * * * *", 0), at(3_000, None));
    // A changed pattern starts afresh.
    assert_eq!(state("w", "0 3 * * *", 9_000), at(9_000, None));
    assert_eq!(state("w", "0 3 * * *", 0), at(9_000, None));
    // A run someone started does not make the schedule busy; a tick's does
    // from its tick to its end.
    let far = now_ms() + 3_600_000;
    assert!(!journal.schedule_busy("w", far).unwrap());
    journal
        .begin(&new_run("manual", "manual"), &me, LEASE)
        .unwrap();
    assert!(!journal.schedule_busy("w", far).unwrap());
    let mut ticked = new_run("ticked", "schedule:2");
    ticked.tick = Some(2_000);
    let Begin::Started { epoch } = journal.begin(&ticked, &me, LEASE).unwrap() else {
        panic!("a new transaction id starts a run")
    };
    assert_eq!(journal.run("ticked").unwrap().tick, Some(2_000));
    assert!(journal.schedule_busy("w", far).unwrap());
    assert!(
        !journal.schedule_busy("w", 2_000).unwrap(),
        "its own tick is not before it"
    );
    assert!(journal.schedule_busy("w", 2_001).unwrap());
    assert!(!journal.schedule_busy("other", far).unwrap());
    std::thread::sleep(Duration::from_millis(5));
    let during = now_ms() - 1;
    journal
        .finish("ticked", epoch, &report("ticked", RunStatus::Done))
        .unwrap();
    let finished = journal.run("ticked").unwrap().finished_at.unwrap();
    assert!(!journal.schedule_busy("w", far).unwrap());
    assert!(!journal.schedule_busy("w", finished).unwrap());
    assert!(
        journal.schedule_busy("w", during).unwrap(),
        "it was unfinished then"
    );
}

fn runs_beyond_a_keys_limit_queue_and_start_by_priority_as_slots_free(journal: &Arc<dyn Journal>) {
    let me = Owner::current();
    let queued = |id: &str, key: &str, priority: i64| {
        let mut run = new_run(id, id);
        run.queue = Some(Queue {
            key: key.into(),
            limit: 1,
            priority,
        });
        run
    };
    let Begin::Started { epoch } = journal.begin(&queued("a1", "a", 0), &me, LEASE).unwrap() else {
        panic!("the key has room")
    };
    // Another key has its own slot.
    assert!(matches!(
        journal.begin(&queued("b1", "b", 0), &me, LEASE).unwrap(),
        Begin::Started { .. }
    ));
    for (id, priority) in [("a2", 0), ("a3", 5), ("a4", 0)] {
        assert!(matches!(
            journal
                .begin(&queued(id, "a", priority), &me, LEASE)
                .unwrap(),
            Begin::Queued
        ));
        std::thread::sleep(Duration::from_millis(2));
    }
    let a2 = journal.run("a2").unwrap();
    assert_eq!(a2.status, RunStatus::Queued);
    assert_eq!(a2.lease_owner, None);
    assert_eq!(a2.concurrency_key.as_deref(), Some("a"));
    // A queued run is not anyone's to claim, nor an orphan.
    assert_eq!(journal.claim("a2", &me, LEASE).unwrap(), None);
    assert!(
        journal
            .claim_orphans(&me, LEASE, 10, &[])
            .unwrap()
            .is_empty()
    );
    // No room while a1 runs.
    assert!(journal.promote(&me, LEASE, 10).unwrap().is_empty());
    journal
        .finish("a1", epoch, &report("a1", RunStatus::Done))
        .unwrap();
    // The highest priority first, then the oldest.
    let started = journal.promote(&me, LEASE, 10).unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].0, "a3");
    assert_eq!(journal.run("a3").unwrap().status, RunStatus::Running);
    assert!(journal.promote(&me, LEASE, 10).unwrap().is_empty());
    // Cancelling a queued run ends it at once; a started one is not "queued".
    assert!(journal.cancel_queued("a4").unwrap());
    assert_eq!(journal.run("a4").unwrap().status, RunStatus::Cancelled);
    assert!(!journal.cancel_queued("a3").unwrap());
    journal
        .finish("a3", started[0].1, &report("a3", RunStatus::Done))
        .unwrap();
    let started = journal.promote(&me, LEASE, 10).unwrap();
    assert_eq!(
        started
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["a2"]
    );
    // The key's slot is taken by a2: a new run queues.
    assert!(matches!(
        journal.begin(&queued("a5", "a", 9), &me, LEASE).unwrap(),
        Begin::Queued
    ));
    journal
        .finish("a2", started[0].1, &report("a2", RunStatus::Done))
        .unwrap();
    // The slot is free, but a5 waits for it: a new run queues behind it
    // instead of taking the slot first.
    assert!(matches!(
        journal.begin(&queued("a6", "a", 99), &me, LEASE).unwrap(),
        Begin::Queued
    ));
    let started = journal.promote(&me, LEASE, 10).unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
}
