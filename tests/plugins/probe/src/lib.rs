//! `probe`: a test step whose behaviour comes entirely from its `config`, so
//! scenario manifests can script invokes, failures, retries, timeouts and
//! compensations without writing a step. See README.md for every option.

use std::time::{Duration, Instant};

use serde::Deserialize;
use wasaga_sdk::__private::{self as raw, Guest, WitContext, WitError, WitResponse};
use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse, Value};

/// The probe's config (all optional).
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
struct Config {
    output: Option<Value>,
    compensation: Option<Value>,
    fail_times: u32,
    fail_always: bool,
    permanent: bool,
    error_kind: Option<String>,
    error_message: Option<String>,
    error_compensation: Option<Value>,
    skip: bool,
    sleep_ms: u64,
    sleep_busy: bool,
    loop_forever: bool,
    alloc_mb: u64,
    trap: bool,
    garbage_output: bool,
    /// Read by `Probe::invoke` before the SDK sees the output.
    #[allow(dead_code)]
    raw_output: Option<String>,
    /// Read by `Probe::invoke`: call a method on a handle the host never gave.
    #[allow(dead_code)]
    forge_handle: bool,
    compensate_fail_times: u32,
    compensate_fail_always: bool,
    compensate_sleep_ms: u64,
    echo_input: bool,
    emit: Option<String>,
    log: Option<String>,
    print_kb: u64,
    big_kb: u64,
    remember: bool,
    create: Option<Create>,
}

/// Calls this instance has seen: a fresh sandbox per call keeps it at 0.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `remember`: what this call can see of earlier calls' writes: a counter
/// in the module's static data, and one page of memory this call grows
/// (which wasm defines as zero), checked and then marked 0xab throughout. A
/// host that reused an instance, or a memory slot without resetting it,
/// shows a count above 0 or dirty pages.
fn remembered() -> Value {
    let calls_before = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(target_arch = "wasm32")]
    let page = core::arch::wasm32::memory_grow(0, 1);
    // Built for the host only by `cargo clippy --all-targets`.
    #[cfg(not(target_arch = "wasm32"))]
    let page = usize::MAX;
    if page == usize::MAX {
        return wasaga_sdk::json!({ "error": "memory.grow failed" });
    }
    // The grown page belongs to no Rust allocation: it is read and written
    // through volatile accesses only, as raw wasm memory.
    let base = (page * 65536) as *mut u8;
    let mut dirty_pages = 0u64;
    for host_page in 0..16 {
        let start = unsafe { base.add(host_page * 4096) };
        let seen = (0..4096).any(|i| unsafe { start.add(i).read_volatile() } != 0);
        dirty_pages += u64::from(seen);
        for i in 0..4096 {
            unsafe { start.add(i).write_volatile(0xab) };
        }
    }
    wasaga_sdk::json!({ "calls-before": calls_before, "dirty-pages": dirty_pages })
}

/// Entities to create first (needs the collection granted).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    #[serde(rename = "in")]
    collection: String,
    count: u32,
}

fn config(ctx: &StepContext) -> Result<Config, StepError> {
    if ctx.config.is_null() {
        Ok(Config::default())
    } else {
        ctx.config_as()
    }
}

fn error(config: &Config, default_message: String) -> StepError {
    let kind = config
        .error_kind
        .as_deref()
        .and_then(ErrorKind::from_name)
        .unwrap_or(ErrorKind::Unknown);
    let message = if config.big_kb > 0 {
        "x".repeat((config.big_kb as usize) << 10)
    } else {
        config.error_message.clone().unwrap_or(default_message)
    };
    let mut err = StepError::new(kind, message);
    if config.permanent {
        err = err.permanent();
    }
    if let Some(data) = &config.error_compensation {
        err = err.with_compensation(data);
    }
    err
}

fn sleep(ms: u64, busy: bool) {
    if ms == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_millis(ms);
    if busy {
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    } else {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn invoke(input: Value, ctx: &StepContext) -> Result<StepResponse<Value>, StepError> {
    let config = config(ctx)?;
    if let Some(line) = &config.log {
        wasaga_sdk::log::info(line);
    }
    if let Some(name) = &config.emit {
        ctx.events()?.emit(name, &input)?;
    }
    for line in 0..config.print_kb * 16 {
        println!("{line:>6} {}", "-".repeat(56));
    }
    if let Some(create) = &config.create {
        let store = ctx.entities(&create.collection)?;
        for n in 0..create.count {
            store.create::<_, Value>(&wasaga_sdk::json!({ "n": n }))?;
        }
    }
    sleep(config.sleep_ms, config.sleep_busy);
    if config.loop_forever {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if config.alloc_mb > 0 {
        let mut block = vec![0u8; (config.alloc_mb as usize) << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
    }
    if config.trap {
        panic!("probe: trap on purpose");
    }
    if config.fail_always || ctx.attempt <= config.fail_times {
        return Err(error(
            &config,
            format!("probe failed on attempt {}", ctx.attempt),
        ));
    }
    if config.skip {
        return Ok(StepResponse::skip());
    }
    let mut output = config.output.clone().unwrap_or(Value::Null);
    if config.remember {
        output = remembered();
    }
    if config.big_kb > 0 {
        output = Value::String("x".repeat((config.big_kb as usize) << 10));
    }
    if config.echo_input {
        output = match (output, input) {
            (Value::Object(mut out), Value::Object(inp)) => {
                out.extend(inp);
                Value::Object(out)
            }
            (Value::Null, inp) => inp,
            (out, _) => out,
        };
    }
    Ok(match config.compensation {
        Some(data) => StepResponse::with_compensation(output, data),
        None => StepResponse::new(output),
    })
}

fn compensate(_data: Option<Value>, ctx: &StepContext) -> Result<(), StepError> {
    let config = config(ctx)?;
    sleep(config.compensate_sleep_ms, config.sleep_busy);
    if config.compensate_fail_always || ctx.attempt <= config.compensate_fail_times {
        let mut err = StepError::unknown(format!(
            "probe compensation failed on attempt {}",
            ctx.attempt
        ));
        if config.permanent {
            err = err.permanent();
        }
        return Err(err);
    }
    Ok(())
}

/// The probe implements the export itself (instead of `create_step!`) so that
/// `garbage-output` and `raw-output` can hand the host text the SDK would
/// not produce, and `forge-handle` can misuse the contract.
struct Probe;

impl Guest for Probe {
    fn invoke(input: String, ctx: WitContext) -> Result<WitResponse, WitError> {
        if ctx.config.contains("\"garbage-output\":true") {
            return Ok(WitResponse::Done(
                raw::bindings::wasaga::step::types::StepOutput {
                    output: "{this is not json".to_string(),
                    compensation_data: None,
                },
            ));
        }
        let raw_output = serde_json::from_str::<Value>(&ctx.config)
            .ok()
            .and_then(|c| c.get("raw-output")?.as_str().map(String::from));
        if ctx.config.contains("\"forge-handle\":true") {
            // A handle number the host never handed out: the host must trap
            // this call, not fail or crash itself.
            let forged = unsafe {
                raw::bindings::wasaga::step::entities::Collection::from_handle(0x7fff_0001)
            };
            let _ = forged.name();
        }
        if let Some(output) = raw_output {
            return Ok(WitResponse::Done(
                raw::bindings::wasaga::step::types::StepOutput {
                    output,
                    compensation_data: None,
                },
            ));
        }
        raw::invoke(input, ctx, invoke)
    }

    fn compensate(data: Option<String>, ctx: WitContext) -> Result<(), WitError> {
        raw::compensate(data, ctx, compensate)
    }
}

raw::export_step!(Probe with_types_in wasaga_sdk::__private::bindings);
