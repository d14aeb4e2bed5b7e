//! The resolved plan the orchestrator executes: steps with their policies and the flow.

use std::sync::Arc;
use std::time::Duration;

use crate::expr::Expr;
use crate::json::Json;

/// A workflow ready to run: what the manifest module resolves a manifest into.
#[derive(Debug)]
pub struct Workflow {
    /// The workflow's name.
    pub name: String,
    /// The steps the flow calls, by index.
    pub steps: Vec<StepSpec>,
    /// The entries to run, in order.
    pub flow: Arc<[Entry]>,
    /// The run's output; `None` returns every bound name as one object.
    pub output: Option<Expr>,
    /// No step starts later than this after the run started.
    pub timeout: Option<Duration>,
    /// Checks the output (the workflow's `output-schema`).
    pub output_check: Option<Arc<dyn JsonCheck>>,
}

/// A check of a JSON value (a compiled JSON Schema, say): every violation.
pub trait JsonCheck: Send + Sync + std::fmt::Debug {
    /// `Err` lists every violation, for people.
    fn check(&self, value: &Json) -> Result<(), Vec<String>>;
}

/// A step as declared: its name and default policy.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The step's name (the `[steps.NAME]` key).
    pub name: String,
    /// Its policy unless a flow entry overrides parts of it.
    pub policy: StepPolicy,
}

/// How a step is called: retries, deadline, compensation, config.
#[derive(Debug, Clone)]
pub struct StepPolicy {
    /// Retries of invoke and of compensate.
    pub retries: RetryPolicy,
    /// Deadline of one call (attempt).
    pub timeout: Option<Duration>,
    /// False: the step is never compensated.
    pub compensate: bool,
    /// Handed to the step in its context.
    pub config: Json,
    /// What a final failure of the step does to the run.
    pub on_permanent_failure: OnFailure,
    /// After invoke, the step waits for an outside answer (`async = true`).
    pub asynchronous: bool,
    /// `host run` leaves the run at this step for a later resume (`background = true`).
    pub background: bool,
}

/// What a step's final failure (permanent, or retries exhausted) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// The run fails and compensates (the default).
    Fail,
    /// The error is recorded, the step's name is bound to null, the run goes
    /// on and ends `done` with `partial`.
    Continue,
    /// Everything after the step is skipped; the run ends `done` with `partial`.
    Skip,
    /// The flow resumes at the entry bound to this name.
    SkipTo(String),
}

impl Default for StepPolicy {
    fn default() -> StepPolicy {
        StepPolicy {
            retries: RetryPolicy::default(),
            timeout: None,
            compensate: true,
            config: Json::null(),
            on_permanent_failure: OnFailure::Fail,
            asynchronous: false,
            background: false,
        }
    }
}

/// At most `max + 1` calls, with waits between them.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max: u32,
    /// Wait before the first retry.
    pub interval: Duration,
    /// How the wait grows.
    pub backoff: Backoff,
    /// Upper bound of the wait.
    pub max_interval: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max: 0,
            interval: Duration::ZERO,
            backoff: Backoff::Fixed,
            max_interval: None,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let delay = match self.backoff {
            Backoff::Fixed => self.interval,
            Backoff::Exponential => self
                .interval
                .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))),
        };
        match self.max_interval {
            Some(max) => delay.min(max),
            None => delay,
        }
    }
}

/// How retry waits grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Always `interval`.
    Fixed,
    /// `interval`, then twice that, four times, ...
    Exponential,
}

/// One entry of a flow.
#[derive(Debug)]
pub enum Entry {
    /// Call a step.
    Run(Call),
    /// Run the branches together; the next entry waits for all of them.
    Parallel(Arc<[Entry]>),
    /// Run `then` only if `condition` holds; otherwise bind `binds` to null.
    When {
        /// A CEL condition.
        condition: Expr,
        /// The entries to run when it holds.
        then: Arc<[Entry]>,
        /// Names bound inside `then`, bound to null when it does not run.
        binds: Vec<String>,
    },
    /// Run another workflow's flow as one entry, in a scope of its own with
    /// its own `input`. Its steps join this run's compensation stack, so they
    /// are compensated in their place in this workflow's order.
    Nested {
        /// The nested workflow's name.
        name: String,
        /// Its flow (its calls index this workflow's steps).
        flow: Arc<[Entry]>,
        /// Its output expression.
        output: Option<Expr>,
        /// Its input; `None` passes this workflow's input.
        input: Option<Expr>,
        /// The name its output is bound to.
        bind: Option<String>,
    },
    /// Call a step once per item of a list, at most `concurrency` at once;
    /// the outputs are bound, in item order, as a list.
    ForEach {
        /// A CEL expression giving the list.
        items: Expr,
        /// The call; its `input` sees `item` and `index`, its node gets `[i]`.
        call: Arc<Call>,
        /// The most items in flight.
        concurrency: usize,
    },
    /// An extension point: its handlers (steps declared for the hook) run in
    /// order with the hook's input; without handlers it does nothing.
    Hook {
        /// The hook's name.
        name: String,
        /// The input handed to every handler.
        input: Option<Expr>,
        /// The handlers, in declaration order.
        handlers: Vec<Call>,
        /// The name the handlers' outputs (a list) are bound to.
        bind: Option<String>,
    },
    /// Wait for a time, journaled: the run pauses as `waiting` and holds
    /// nothing while it sleeps; whoever resumes it after its time goes on.
    Sleep(Sleep),
    /// Bind the value of an expression to a name.
    Transform {
        /// A CEL expression.
        expr: Expr,
        /// The name to bind.
        bind: String,
    },
}

impl Entry {
    /// The names this entry binds (those of nested entries included).
    pub fn binds(&self) -> Vec<String> {
        match self {
            Entry::Run(call) => call.bind.iter().cloned().collect(),
            Entry::ForEach { call, .. } => call.bind.iter().cloned().collect(),
            Entry::Parallel(entries) => entries.iter().flat_map(Entry::binds).collect(),
            Entry::When { binds, .. } => binds.clone(),
            Entry::Nested { bind, .. } | Entry::Hook { bind, .. } => bind.iter().cloned().collect(),
            Entry::Transform { bind, .. } => vec![bind.clone()],
            Entry::Sleep(sleep) => sleep.bind.iter().cloned().collect(),
        }
    }
}

/// A `sleep` (or `sleep-until`) flow entry.
#[derive(Debug)]
pub struct Sleep {
    /// Its unique name in the run (`sleep`, or its `as`): the call the
    /// journal records.
    pub node: String,
    /// How long (`sleep = "2h"`).
    pub duration: Option<Duration>,
    /// Until when (`sleep-until`): a CEL expression giving an RFC 3339 time
    /// in UTC.
    pub until: Option<Expr>,
    /// The name its output (`{"until": "<RFC 3339>"}`) is bound to.
    pub bind: Option<String>,
}

/// A call of a step from the flow.
#[derive(Debug)]
pub struct Call {
    /// Index into [`Workflow::steps`].
    pub step: usize,
    /// Unique name of this call in the workflow (the step name, or `as` when a
    /// step is called more than once): the `step` of the context and the
    /// idempotency key.
    pub node: String,
    /// The step's input; `None` passes the workflow input.
    pub input: Option<Expr>,
    /// The name the output is bound to.
    pub bind: Option<String>,
    /// The step's policy with this entry's overrides applied.
    pub policy: StepPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max: 5,
            interval: Duration::from_millis(100),
            backoff: Backoff::Exponential,
            max_interval: Some(Duration::from_millis(350)),
        };
        let waits: Vec<u128> = (1..=4).map(|a| policy.delay_after(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }
}
