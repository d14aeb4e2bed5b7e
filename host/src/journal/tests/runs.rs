//! Runs as an operator sees them: reopening a finished run, cancels, listing,
//! runs due to wake up, and reruns.

use super::*;

pub(super) fn only_a_finished_run_is_reopened_and_cancels_are_seen(journal: &Arc<dyn Journal>) {
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

pub(super) fn runs_are_listed_newest_first_by_status_and_workflow(journal: &Arc<dyn Journal>) {
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

pub(super) fn waiting_runs_are_due_at_their_wake_up_time_and_reruns_are_listed_by_their_original(
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
