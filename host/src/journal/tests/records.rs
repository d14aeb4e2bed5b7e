//! A run's records: written, read back as a history (an input that is the
//! previous output whole), queued writes committed in order and fenced, and
//! a finished run released and pruned.

use super::*;

pub(super) fn records_come_back_as_a_history(journal: &Arc<dyn Journal>) {
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
pub(super) fn an_input_that_is_the_previous_output_reads_back_whole(journal: &Arc<dyn Journal>) {
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
pub(super) fn queued_writes_awaited_by_tasks_are_committed_and_fenced(journal: &Arc<dyn Journal>) {
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

pub(super) fn finishing_releases_the_lease_and_pruning_removes_old_runs(
    journal: &Arc<dyn Journal>,
) {
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
