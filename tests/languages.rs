//! Steps in four languages, built from source: the SDK conformance step in
//! Rust, Python and JavaScript behaves the same through one manifest; the
//! brand steps in Python, JavaScript and C run, and `mixed-brand.toml`
//! compensates across languages; `host new` projects build and run.
//!
//! Needs componentize-py, node (with `npm ci` in guest-sdk/js), clang with
//! wasi-libc and wit-bindgen-cli: `.ci/run` installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Sandbox, brand_manifest, repo};
use serde_json::{Value, json};

/// Fails with the missing tool's name (and how CI installs it).
fn require_toolchains() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let missing: Vec<&str> = [
            ("componentize-py", "pip install componentize-py==0.25.1"),
            ("node", "Node.js 20"),
            (
                "clang",
                "apt-get install clang lld wasi-libc libclang-rt-dev-wasm32",
            ),
            (
                "wit-bindgen",
                "cargo install wit-bindgen-cli --version 0.63.0",
            ),
        ]
        .iter()
        .filter(|(tool, _)| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|(_, how)| *how)
        .collect();
        assert!(
            missing.is_empty(),
            "the language tests need: {}",
            missing.join("; ")
        );
        assert!(
            repo()
                .join("guest-sdk/js/node_modules/componentize-qjs")
                .exists(),
            "the language tests need `npm ci` in guest-sdk/js"
        );
    });
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn target() -> PathBuf {
    common::wasm_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The conformance step, built in each language.
fn sdk_check(language: &str) -> PathBuf {
    require_toolchains();
    let out = target().join(language).join("sdk_check.wasm");
    match language {
        "rust" => return common::component("sdk-check"),
        "python" => run(Command::new("componentize-py")
            .current_dir(repo().join("guest-sdk/python"))
            .args([
                "-d",
                "../../wit",
                "-w",
                "step",
                "componentize",
                "sdk_check",
                "-p",
                "tests",
                "-p",
                ".",
                "-o",
            ])
            .arg(&out)),
        "js" => run(Command::new("node")
            .arg(repo().join("guest-sdk/js/build.mjs"))
            .arg(repo().join("guest-sdk/js/tests/sdk-check.js"))
            .arg(&out)),
        _ => unreachable!(),
    }
    out
}

fn conformance_manifest(component: &Path) -> String {
    format!(
        r#"[workflow]
name = "sdk-check"
[config]
greeting = "hello"
[steps.check]
component = "{}"
grants = {{ entities = ["brand"], events = true, config = ["greeting"] }}
config = {{ answer = 42 }}
[[flow]]
run = "check"
input = "{{'op': 'create', 'name': 'Acme'}}"
as = "created"
[[flow]]
run = "check"
input = "{{'op': 'context'}}"
as = "context"
[[flow]]
run = "check"
input = "{{'op': 'emit', 'n': 1}}"
as = "emitted"
[[flow]]
run = "check"
input = "{{'op': 'list', 'name': 'Acme'}}"
as = "listed"
[[flow]]
run = "check"
input = "{{'op': 'missing'}}"
as = "missing"
[[flow]]
run = "check"
input = "{{'op': 'skip'}}"
as = "skipped"
[[flow]]
run = "check"
input = "{{'op': 'fail', 'kind': 'conflict', 'message': 'taken', 'permanent': true, 'compensation': {{'half': true}}}}"
as = "failed"
"#,
        component.display()
    )
}

/// What a run did, without what differs between runs (ids, times).
fn behaviour(report: &Value) -> Value {
    let trace: Vec<Value> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut input = if t["input"].as_str().is_some_and(|s| s.starts_with("brand_")) { json!("<brand id>") } else { t["input"].clone() };
            // The idempotency key holds the run's transaction id.
            if let Some(key) = input.get_mut("key") {
                *key = json!(key.as_str().map(|k| k.split(':').filter(|p| p.len() != 36).collect::<Vec<_>>().join(":")));
            }
            json!({"action": t["action"], "node": t["node"], "outcome": t["outcome"], "input": input, "error": t["error"]})
        })
        .collect();
    json!({"status": report["status"], "error": report["error"], "events": report["events"], "trace": trace})
}

#[test]
fn the_sdks_of_rust_python_and_javascript_behave_the_same() {
    let mut behaviours = Vec::new();
    for language in ["rust", "python", "js"] {
        let sandbox = Sandbox::new();
        let manifest = sandbox.manifest("check.toml", &conformance_manifest(&sdk_check(language)));
        let finished = sandbox.run(&manifest, "{}");
        let report = finished.report();
        assert_eq!(
            report["status"], "reverted",
            "{language}: {}",
            finished.stderr
        );
        assert!(
            sandbox.rows("brand").is_empty(),
            "{language}: the created brand was deleted by compensation"
        );
        assert!(
            finished.stderr.contains("sdk-check compensated"),
            "{language}: its log line: {}",
            finished.stderr
        );
        behaviours.push((language, behaviour(&report)));
    }
    let (_, rust) = &behaviours[0];
    let context = rust["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["node"] == "context")
        .unwrap();
    assert_eq!(context["outcome"], "ok");
    for (language, behaviour) in &behaviours[1..] {
        assert_eq!(behaviour, rust, "{language} differs from rust");
    }
    // What the steps saw and returned is the same too.
    let compensated_context: Vec<Value> = behaviours
        .iter()
        .map(|(_, b)| {
            b["trace"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["action"] == "compensate" && t["node"] == "context")
                .unwrap()["input"]
                .clone()
        })
        .collect();
    assert_eq!(
        compensated_context[0],
        json!({"greeting": "hello", "config": {"answer": 42}, "attempt": 1, "key": "sdk-check:context:invoke", "workflow": "sdk-check"})
    );
    assert!(
        compensated_context
            .iter()
            .all(|c| c == &compensated_context[0])
    );
}

#[test]
fn mixed_brand_runs_four_languages_and_compensates_across_them() {
    require_toolchains();
    let sandbox = Sandbox::new();
    let manifest = brand_manifest("mixed-brand.toml");
    let path = manifest.to_str().unwrap();
    let done = sandbox.host(&[
        "run",
        "--build",
        path,
        "--input",
        r#"{"name": "Acme Tools"}"#,
    ]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let report = done.report();
    assert_eq!(report["output"]["slug"], "acme-tools");
    assert_eq!(
        report["output"]["brand"]["logo_url"],
        "https://cdn.example.com/brands/default-logo.png"
    );
    assert_eq!(
        done.calls(),
        [
            "invoke validate-brand",
            "invoke create-brand",
            "invoke assign-default-logo",
            "invoke slugify-brand"
        ]
    );
    assert_eq!(sandbox.rows("brand").len(), 1);

    let reverted = sandbox.host(&["run", path, "--input", r#"{"name": "Admin"}"#]);
    assert_eq!(reverted.code, 1);
    let report = reverted.report();
    assert_eq!(report["error"]["message"], "the slug 'admin' is reserved");
    assert_eq!(
        reverted.calls(),
        [
            "invoke validate-brand",      // Python
            "invoke create-brand",        // Rust
            "invoke assign-default-logo", // JavaScript
            "invoke slugify-brand",       // C
            "compensate slugify-brand",
            "compensate assign-default-logo",
            "compensate create-brand",
            "compensate validate-brand",
        ]
    );
    assert_eq!(
        sandbox.rows("brand").len(),
        1,
        "the reverted brand is gone; the first one stays"
    );
    let invalid = sandbox.host(&["run", path, "--input", r#"{"name": "A"}"#]);
    assert_eq!(
        invalid.report()["error"]["message"],
        "brand name 'A' is too short: 1 characters, at least 2 needed"
    );
}

#[test]
fn the_python_and_javascript_brand_steps_keep_the_rust_contract() {
    require_toolchains();
    let sandbox = Sandbox::new();
    let brand = repo().join("example-plugins/brand");
    let js_validate = target().join("js/validate_brand.wasm");
    run(Command::new("node")
        .arg(repo().join("guest-sdk/js/build.mjs"))
        .arg(brand.join("js/validate-brand.js"))
        .arg(&js_validate));
    let py_assign = target().join("python/assign_default_logo.wasm");
    run(Command::new("componentize-py")
        .current_dir(&brand)
        .args([
            "-d",
            "../../wit",
            "-w",
            "step",
            "componentize",
            "assign_default_logo",
            "-p",
            "python",
            "-p",
            "../../guest-sdk/python",
            "-o",
        ])
        .arg(&py_assign));
    let text = format!(
        r#"[workflow]
name = "swapped"
[config]
default-logo-url = "https://logo.example/x.png"
[steps.validate-brand]
component = "{}"
config = {{ min-length = 3 }}
[steps.create-brand]
component = "{}"
grants = {{ entities = ["brand"] }}
[steps.assign-default-logo]
component = "{}"
grants = {{ entities = ["brand"], config = ["default-logo-url"] }}
[steps.fail]
component = "{{probe}}"
config = {{ fail-always = true, permanent = true }}
[[flow]]
run = "validate-brand"
[[flow]]
run = "create-brand"
as = "brand"
[[flow]]
run = "assign-default-logo"
input = "brand"
as = "with_logo"
[[flow]]
when = "input.name == 'Fail'"
then = [{{ run = "fail" }}]
[output]
value = "with_logo"
"#,
        js_validate.display(),
        common::component("create-brand").display(),
        py_assign.display()
    );
    let manifest = sandbox.manifest("swapped.toml", &text);
    let done = sandbox.run(&manifest, r#"{"name": "Acme"}"#);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        done.report()["output"]["logo_url"],
        "https://logo.example/x.png"
    );
    let short = sandbox.run(&manifest, r#"{"name": "Ab"}"#);
    assert_eq!(
        short.report()["error"]["message"],
        "brand name 'Ab' is too short: 2 characters, at least 3 needed"
    );
    let failed = sandbox.run(&manifest, r#"{"name": "Fail"}"#);
    assert_eq!(failed.report()["status"], "reverted");
    // The Python compensation removed the logo before the Rust one deleted the brand.
    let calls = failed.calls();
    assert_eq!(
        &calls[4..],
        [
            "compensate fail",
            "compensate assign-default-logo",
            "compensate create-brand",
            "compensate validate-brand"
        ]
    );
    assert_eq!(sandbox.rows("brand").len(), 1);
}

#[test]
fn host_new_creates_projects_that_build_and_run_in_each_language() {
    require_toolchains();
    for lang in ["rust", "python", "js"] {
        let sandbox = Sandbox::new();
        let dir = sandbox.path(&format!("hello-{lang}"));
        let name = format!("hello-{lang}");
        let created = sandbox.host(&[
            "new",
            "step",
            &name,
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(created.code, 0, "{lang}: {}", created.stderr);
        assert!(
            created
                .stdout
                .contains(&format!("host run --build {name}.toml")),
            "{}",
            created.stdout
        );
        // The printed command, from the project's folder.
        let output = Command::new(env!("CARGO_BIN_EXE_host"))
            .current_dir(&dir)
            .args([
                "run",
                "--build",
                &format!("{name}.toml"),
                "--input",
                r#"{"name": "World"}"#,
            ])
            .env("WASAGA_CACHE_DIR", common::cache_dir())
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{lang}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            report["output"],
            json!({"greeting": "Hello, World!"}),
            "{lang}"
        );
        let again = sandbox.host(&[
            "new",
            "step",
            &name,
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(again.code, 2, "an existing project is not overwritten");
    }
    let sandbox = Sandbox::new();
    let bad = sandbox.host(&["new", "step", "Bad Name", "--lang", "rust"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("is not a step name"), "{}", bad.stderr);
}

/// The checkout's charge step in Python and in JavaScript
/// (`example-plugins/payments/{python,js}`), each swapped in for the Rust
/// one: it charges through `wasi:http` with the secret the host swaps in,
/// and refunds when a later step fails, as the Rust step does
/// (`tests/http.rs`).
#[test]
fn the_python_and_javascript_charge_steps_charge_and_refund_like_the_rust_one() {
    use common::provider::{KEY, Provider, cart, checkout, run_with_key, state_bytes};
    require_toolchains();
    let payments = repo().join("example-plugins/payments");
    let python = target().join("python/charge_payment.wasm");
    run(Command::new("componentize-py")
        .current_dir(&payments)
        .args([
            "-d",
            "../../wit",
            "-w",
            "step-http",
            "componentize",
            "charge_payment",
            "-p",
            "python",
            "-p",
            "../../guest-sdk/python",
            "-o",
        ])
        .arg(&python));
    let js = target().join("js/charge_payment.wasm");
    run(Command::new("node")
        .arg(repo().join("guest-sdk/js/build.mjs"))
        .args(["--engine", "spidermonkey"])
        .arg(payments.join("js/charge-payment.js"))
        .arg(&js));
    for (language, component) in [("python", &python), ("js", &js)] {
        let sandbox = Sandbox::new();
        let provider = Provider::start(&sandbox, "pay");
        let rust = common::wasm_dir().join("charge_payment.wasm");
        let manifest = checkout(
            &sandbox,
            &provider,
            &[(
                &rust.display().to_string(),
                &component.display().to_string(),
            )],
        );
        let run = run_with_key(&sandbox, &manifest, &cart("tok_visa"));
        assert_eq!(run.code, 0, "{language}: {}", run.stdout);
        assert_eq!(run.report()["output"]["charge"], "ch_1");
        let ledger = provider.ledger();
        let key = ledger["charges"]["ch_1"]["idempotency_key"]
            .as_str()
            .unwrap();
        assert!(
            key.ends_with(":charge-payment:invoke:1"),
            "{language}: {key}"
        );
        provider.control(serde_json::json!({"webhook_status": 500}));
        let run = run_with_key(&sandbox, &manifest, &cart("tok_visa"));
        assert_eq!(run.code, 1, "{language}: {}", run.stdout);
        assert_eq!(run.report()["status"], "reverted");
        let ledger = provider.ledger();
        assert_eq!(
            ledger["charges"]["ch_2"]["refunded"], true,
            "{language}: {ledger:#}"
        );
        let run = run_with_key(&sandbox, &manifest, &cart("tok_declined"));
        let report = run.report();
        assert!(
            report["error"]["message"]
                .as_str()
                .unwrap()
                .contains("declined"),
            "{language}: {report:#}"
        );
        assert!(!state_bytes(&sandbox).contains(KEY), "{language}");
    }
}
