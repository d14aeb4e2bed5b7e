//! What a step's `on_permanent_failure` does: continue, skip, skip to an entry.

use super::*;

fn with_policy(on_permanent_failure: OnFailure) -> StepPolicy {
    StepPolicy {
        on_permanent_failure,
        ..Default::default()
    }
}

#[tokio::test]
async fn continue_records_the_error_binds_null_and_ends_done_partial() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let b = f.step("b", Behaviour::default());
    let flow = vec![
        f.run_with(a, None, Some("ra"), with_policy(OnFailure::Continue)),
        f.run_entry(b, Some("ra"), Some("rb")),
    ];
    let report = run(&f.saga(flow, Some("rb.input")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert!(report.partial);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].step.as_deref(), Some("a"));
    assert_eq!(report.output.unwrap().value(), &json!(null));
}

#[tokio::test]
async fn skip_skips_everything_after_the_step() {
    let mut f = Flow::new();
    let a = f.step("a", Behaviour::default());
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let c = f.step("c", Behaviour::default());
    let flow = vec![
        f.run_entry(a, None, Some("ra")),
        f.run_with(bad, None, Some("rbad"), with_policy(OnFailure::Skip)),
        f.run_entry(c, None, Some("rc")),
    ];
    let report = run(&f.saga(flow, Some("{'a': ra.step, 'c': rc}")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert!(report.partial);
    assert_eq!(
        report.output.as_ref().unwrap().value(),
        &json!({"a": "a", "c": null})
    );
    assert_eq!(actions(&report), ["invoke a", "invoke bad"]);
}

#[tokio::test]
async fn skip_to_resumes_at_the_named_entry() {
    let mut f = Flow::new();
    let bad = f.step(
        "bad",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let skipped = f.step("skipped", Behaviour::default());
    let target = f.step("target", Behaviour::default());
    let after = f.step("after", Behaviour::default());
    let flow = vec![
        f.run_with(bad, None, None, with_policy(OnFailure::SkipTo("t".into()))),
        f.run_entry(skipped, None, Some("s")),
        f.run_entry(target, None, Some("t")),
        f.run_entry(after, Some("{'s': s, 't': t.step}"), Some("x")),
    ];
    let report = run(&f.saga(flow, Some("x.input")), json!(1)).await;
    assert_eq!(report.status, RunStatus::Done);
    assert_eq!(
        actions(&report),
        ["invoke bad", "invoke target", "invoke after"]
    );
    assert_eq!(
        report.output.unwrap().value(),
        &json!({"s": null, "t": "target"})
    );
}

#[tokio::test]
async fn a_continued_failure_is_compensated_if_the_run_later_fails() {
    let mut f = Flow::new();
    let a = f.step(
        "a",
        Behaviour {
            fail: true,
            permanent: true,
            error_compensation: Some(json!("half")),
            ..Default::default()
        },
    );
    let b = f.step(
        "b",
        Behaviour {
            fail: true,
            permanent: true,
            ..Default::default()
        },
    );
    let flow = vec![
        f.run_with(a, None, None, with_policy(OnFailure::Continue)),
        f.run_entry(b, None, None),
    ];
    let report = run(&f.saga(flow, None), json!(1)).await;
    assert_eq!(report.status, RunStatus::Reverted);
    assert_eq!(
        actions(&report),
        ["invoke a", "invoke b", "compensate b", "compensate a"]
    );
    assert_eq!(f.log.lines().last().unwrap(), "compensate a \"half\" #1");
}
