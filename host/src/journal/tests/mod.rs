//! The journal's behaviour, tested from one source on both backends: a real
//! SQLite file and a real PostgreSQL server (a schema of its own per test),
//! so a behaviour cannot exist on one and not the other. Here the fixtures
//! and the list of tests; each subject is a module of its own.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::json::Json;
use crate::saga::{Action, CallRecord, RunReport, RunStatus};
use crate::telemetry::TraceContext;

mod leases;
mod queues;
mod records;
mod runs;
mod starts;

// The tests, for `on_both_backends!` below (each module holds one subject).
use leases::*;
use queues::*;
use records::*;
use runs::*;
use starts::*;

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
