//! Native workflows for benchmarks and the instruction-count guard: steps in a
//! line, each handing a ~1 KB payload on and doing no work of its own, so that
//! what is measured is the orchestrator. Owns no semantics of its own.

use std::sync::Arc;

use serde_json::json;

use super::{Call, Entry, FailureKind, FnStep, Invoked, Saga, Step, StepFailure, StepPolicy};
use super::{StepSpec, Workflow};
use crate::expr::Expr;
use crate::json::Json;

/// The ~1 KB output of step `step` (the shape of the Medusa bench harness's
/// payload: an id, a sequence number and 18 items).
pub fn payload(step: usize) -> Json {
    let items: Vec<_> = (0..18)
        .map(|j| {
            json!({"k": format!("s{step}_k{j}"), "v": (step * 31 + j * 7) % 100_003,
                   "tag": format!("7-{step}-{j}-xxxxxxxxxxxx")})
        })
        .collect();
    Json::from_value(json!({"step": step, "seq": step, "base": 7,
                            "id": format!("wf-7-step-{step}"), "items": items}))
}

/// The workflow `s1 → s2 → … → sN`: step `i` takes `p{i-1}` (the workflow
/// input for the first) and binds `p{i}`; the output is `p{N}`. Every step is
/// compensable; the last fails permanently when `fail_last`.
pub fn linear_workflow(name: &str, steps: usize) -> Workflow {
    let specs: Vec<StepSpec> = (1..=steps)
        .map(|i| StepSpec {
            name: format!("s{i}"),
            policy: StepPolicy::default(),
        })
        .collect();
    let flow: Vec<Entry> = (1..=steps)
        .map(|i| {
            Entry::Run(Call {
                step: i - 1,
                node: format!("s{i}"),
                input: (i > 1).then(|| Expr::compile(&format!("p{}", i - 1)).expect("a name")),
                bind: Some(format!("p{i}")),
                policy: StepPolicy::default(),
            })
        })
        .collect();
    Workflow {
        name: name.to_string(),
        steps: specs,
        flow: flow.into(),
        output: Some(Expr::compile(&format!("p{steps}")).expect("a name")),
        timeout: None,
        output_check: None,
    }
}

/// Native steps for [`linear_workflow`]: step `i` returns [`payload`]`(i)`,
/// built once beforehand (a clone of it is a reference count, not a copy).
pub fn linear_steps(steps: usize, fail_last: bool) -> Vec<Arc<dyn Step>> {
    (1..=steps)
        .map(|i| {
            let output = payload(i);
            let fails = fail_last && i == steps;
            Arc::new(FnStep::new(move |_input: Json, _call| {
                let output = output.clone();
                async move {
                    if fails {
                        return Err(StepFailure::new(
                            FailureKind::InvalidData,
                            "the last step fails on purpose",
                        )
                        .permanent());
                    }
                    Ok(Invoked::Done {
                        output,
                        compensation: None,
                    })
                }
            })) as Arc<dyn Step>
        })
        .collect()
}

/// [`linear_workflow`] bound to [`linear_steps`].
pub fn linear(steps: usize, fail_last: bool) -> Saga {
    Saga::new(
        Arc::new(linear_workflow("native-linear", steps)),
        linear_steps(steps, fail_last),
    )
}
