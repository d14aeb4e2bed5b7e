//! Leases: live and dead owners, the fence on a former holder's writes,
//! orphaned runs claimed in batches, renewals, a recorder past its host's
//! last renewal, and crashes counted on a takeover.

use super::*;

pub(super) fn a_live_owner_keeps_its_run_and_a_dead_one_loses_it(journal: &Arc<dyn Journal>) {
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

/// The fence: once another host claimed the run (its lease expired while
/// this one was paused), every write of the former holder fails with
/// `LeaseLost` and changes nothing.
pub(super) fn a_host_whose_lease_was_taken_over_writes_nothing_more(journal: &Arc<dyn Journal>) {
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

pub(super) fn orphaned_runs_are_claimed_in_batches_and_live_ones_are_left(
    journal: &Arc<dyn Journal>,
) {
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

pub(super) fn renewing_extends_only_the_runs_named(journal: &Arc<dyn Journal>) {
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

/// A host whose renewals stopped (cut off from the journal, or starved)
/// does not count on its lease past its last renewal: before it writes, the
/// run's recorder renews the lease itself, and stops the run (writing
/// nothing) once another host holds it.
pub(super) fn a_recorder_past_the_hosts_last_renewal_renews_its_lease_or_stops(
    journal: &Arc<dyn Journal>,
) {
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

pub(super) fn taking_a_run_over_from_a_dead_host_counts_a_crash_and_reopening_clears_them(
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

/// PostgreSQL only (a pool is its own): a write the fence refuses answers
/// `LeaseLost` even while every other connection of the pool is taken. It
/// asks why on its own connection; a second one from the pool would wait
/// for the pool's timeout and answer a pool error instead.
#[test]
fn a_refused_write_answers_lease_lost_while_the_pool_is_taken() {
    let schema = crate::postgres::testing::TestSchema::new();
    let database = crate::postgres::Database::connect(&schema.url, SyncMode::Normal).unwrap();
    let journal = PgJournal::new(database.clone());
    journal
        .begin(&new_run("r1", "t1"), &Owner::current(), LEASE)
        .unwrap();
    let (held, holding) = std::sync::mpsc::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    // Every connection but one is taken until the write has answered.
    let holder = database.run_queued(move |pool| async move {
        let mut taken = Vec::new();
        for _ in 1..pool.status().max_size {
            taken.push(pool.get().await.unwrap());
        }
        held.send(()).unwrap();
        let _ = released.await;
        drop(taken);
    });
    holding.recv().unwrap();
    let refused = journal.set_status("r1", 2, RunStatus::Failed);
    release.send(()).unwrap();
    futures::executor::block_on(holder);
    assert!(
        matches!(refused, Err(JournalError::LeaseLost(ref run)) if run == "r1"),
        "{refused:?}"
    );
}
