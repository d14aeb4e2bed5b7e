//! Schedules' ticks and per-key concurrency queues.

use super::*;

pub(super) fn a_schedule_remembers_its_last_tick_and_sees_its_unfinished_runs(
    journal: &Arc<dyn Journal>,
) {
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

pub(super) fn runs_beyond_a_keys_limit_queue_and_start_by_priority_as_slots_free(
    journal: &Arc<dyn Journal>,
) {
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
