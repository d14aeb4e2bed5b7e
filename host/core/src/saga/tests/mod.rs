//! The orchestrator's semantics (the README's "Semantics" section), with
//! closure steps: fast and deterministic. Here the steps and recorders the
//! tests share; each subject is a module of its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::expr::Expr;
use crate::json::Json;

/// Everything the steps of a test did, in order: "invoke a", "compensate b {data}".
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// How a test step behaves.
#[derive(Clone, Default)]
struct Behaviour {
    fail: bool,
    permanent: bool,
    fail_times: u32,
    skip: bool,
    sleep_ms: u64,
    compensation: Option<Value>,
    error_compensation: Option<Value>,
    compensate_fails: bool,
    barrier: Option<Arc<tokio::sync::Barrier>>,
}

struct Flow {
    steps: Vec<StepSpec>,
    impls: Vec<Arc<dyn Step>>,
    log: Log,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            steps: Vec::new(),
            impls: Vec::new(),
            log: Log::default(),
        }
    }

    /// Declares step `name`; its output is `{"step": name, "input": input}`.
    fn step(&mut self, name: &str, behaviour: Behaviour) -> usize {
        let log = self.log.clone();
        let comp_log = self.log.clone();
        let label = name.to_string();
        let comp_label = name.to_string();
        let b = behaviour.clone();
        let step = FnStep::new(move |input: Json, call: StepCall| {
            let log = log.clone();
            let label = label.clone();
            let b = b.clone();
            async move {
                log.push(format!("invoke {label} #{}", call.attempt));
                if let Some(barrier) = &b.barrier {
                    barrier.wait().await;
                }
                if b.sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(b.sleep_ms)).await;
                }
                log.push(format!("end {label}"));
                if b.fail || call.attempt <= b.fail_times {
                    let mut failure =
                        StepFailure::new(FailureKind::InvalidData, format!("{label} failed"));
                    failure.permanent = b.permanent;
                    failure.compensation_data = b.error_compensation.clone().map(Json::from_value);
                    return Err(failure);
                }
                if b.skip {
                    return Ok(Invoked::Skip);
                }
                let output = Json::from_value(json!({"step": label, "input": input.value()}));
                Ok(Invoked::Done {
                    output,
                    compensation: b.compensation.clone().map(Json::from_value),
                })
            }
        })
        .with_compensate(move |data: Option<Json>, call: StepCall| {
            let log = comp_log.clone();
            let label = comp_label.clone();
            let fails = behaviour.compensate_fails;
            async move {
                let data = data
                    .map(|d| d.text().to_string())
                    .unwrap_or_else(|| "-".into());
                log.push(format!("compensate {label} {data} #{}", call.attempt));
                if fails {
                    return Err(StepFailure::new(
                        FailureKind::Unknown,
                        format!("undo of {label} failed"),
                    ));
                }
                Ok(())
            }
        });
        self.steps.push(StepSpec {
            name: name.to_string(),
            policy: StepPolicy::default(),
        });
        self.impls.push(Arc::new(step));
        self.steps.len() - 1
    }

    fn saga(&self, flow: Vec<Entry>, output: Option<&str>) -> Saga {
        self.saga_within(flow, output, None)
    }

    /// [`Flow::saga`] with a workflow `timeout`.
    fn saga_within(
        &self,
        flow: Vec<Entry>,
        output: Option<&str>,
        timeout: Option<Duration>,
    ) -> Saga {
        let workflow = Workflow {
            name: "test".into(),
            steps: self.steps.clone(),
            flow: flow.into(),
            output: output.map(|o| Expr::compile(o).unwrap()),
            timeout,
            output_check: None,
        };
        Saga::new(Arc::new(workflow), self.impls.clone())
    }

    fn run_entry(&self, step: usize, input: Option<&str>, bind: Option<&str>) -> Entry {
        self.run_with(step, input, bind, self.steps[step].policy.clone())
    }

    fn run_with(
        &self,
        step: usize,
        input: Option<&str>,
        bind: Option<&str>,
        policy: StepPolicy,
    ) -> Entry {
        Entry::Run(Call {
            step,
            node: self.steps[step].name.clone(),
            input: input.map(|i| Expr::compile(i).unwrap()),
            bind: bind.map(str::to_string),
            policy,
        })
    }
}

async fn run(saga: &Saga, input: Value) -> RunReport {
    saga.run(RunRequest::new(Json::from_value(input))).await
}

fn actions(report: &RunReport) -> Vec<String> {
    report
        .trace
        .iter()
        .map(|t| format!("{} {}", t.action.as_str(), t.step))
        .collect()
}

/// A recorder that keeps everything in memory, like the journal would.
#[derive(Default)]
struct MemoryRecorder {
    history: Mutex<History>,
    seq: std::sync::atomic::AtomicU64,
}

impl Recorder for MemoryRecorder {
    fn call_started(&self, call: &CallStart<'_>) -> Result<(), RecordError> {
        self.history
            .lock()
            .unwrap()
            .started(call.node, call.action, call.attempt);
        Ok(())
    }
    fn call_finished(
        &self,
        node: &str,
        action: Action,
        attempt: u32,
        record: &CallRecord,
    ) -> Result<u64, RecordError> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.history
            .lock()
            .unwrap()
            .finished(seq, node, action, attempt, record.clone());
        Ok(seq)
    }
    fn event(&self, _: &Event) -> Result<(), RecordError> {
        Ok(())
    }
    fn compensating(&self, _: &RunError) -> Result<(), RecordError> {
        Ok(())
    }
}

fn resume(recorder: &Arc<MemoryRecorder>, cancel: bool) -> Durability {
    Durability {
        recorder: recorder.clone(),
        history: recorder.history.lock().unwrap().clone(),
        cancel,
        ..Default::default()
    }
}

mod deadlines;
mod fan_out;
mod flow;
mod policies;
mod resume;
mod time;
