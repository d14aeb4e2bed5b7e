//! Benchmark step: the same ~1 KB payload as `makePayload` in the Medusa bench
//! harness, computed from the previous step's output. Config: `step` (its
//! number) and `fail` (fail on purpose, as the last step of the failing case).

use serde::{Deserialize, Serialize};
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Prev {
    #[serde(default)]
    seq: u64,
    base: Option<u64>,
    id: Value,
}

#[derive(Serialize)]
struct Item {
    k: String,
    v: u64,
    tag: String,
}

#[derive(Serialize)]
struct Payload {
    step: u64,
    seq: u64,
    base: u64,
    id: String,
    #[serde(rename = "prevId")]
    prev_id: Value,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Config {
    step: u64,
    #[serde(default)]
    fail: bool,
}

fn invoke(prev: Prev, ctx: &StepContext) -> Result<StepResponse<Payload, Value>, StepError> {
    let config: Config = ctx.config_as()?;
    if config.fail {
        return Err(StepError::unknown(format!(
            "step {} failed on purpose",
            config.step
        )));
    }
    let step = config.step;
    let seq = prev.seq + 1;
    let base = prev.base.or_else(|| prev.id.as_u64()).unwrap_or(0);
    let items = (0..18)
        .map(|j| Item {
            k: format!("s{step}_k{j}"),
            v: (seq * 31 + j * 7 + base) % 100_003,
            tag: format!("{base}-{step}-{j}-xxxxxxxxxxxx"),
        })
        .collect();
    let id = format!("wf-{base}-step-{step}");
    let undo = json!({ "undo": id });
    Ok(StepResponse::with_compensation(
        Payload {
            step,
            seq,
            base,
            id,
            prev_id: prev.id,
            items,
        },
        undo,
    ))
}

fn compensate(_data: Option<Value>, _ctx: &StepContext) -> Result<(), StepError> {
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
