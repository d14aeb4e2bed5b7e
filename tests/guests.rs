//! The guests themselves: every guest crate of the workspace is used by some
//! test (derived from the workspace, so a new plugin without a test fails
//! here), the benchmark step computes what the benchmark says, and a step
//! built against the contract as first released still runs on today's host.

mod common;

use std::path::{Path, PathBuf};

use common::{Sandbox, component, guests, repo};
use serde_json::json;

/// The test sources (`tests/*.rs`) with their text.
fn test_sources() -> Vec<(PathBuf, String)> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(repo().join("tests")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            sources.push((path, text));
        }
    }
    sources
}

/// Every manifest of the examples, with its text.
fn example_manifests() -> Vec<(PathBuf, String)> {
    let mut manifests = Vec::new();
    for example in std::fs::read_dir(repo().join("example-plugins"))
        .unwrap()
        .flatten()
    {
        for entry in std::fs::read_dir(example.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                manifests.push((path, text));
            }
        }
    }
    manifests
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A guest is used by a test when a test names it (`component("name")`, a
/// `{name}` placeholder, or its `.wasm` file), or names a manifest of the
/// examples that runs its `.wasm`.
#[test]
fn every_guest_is_used_by_a_test() {
    let sources = test_sources();
    let manifests = example_manifests();
    let named_by_a_test = |needle: &str| sources.iter().any(|(_, text)| text.contains(needle));
    let mut unused = Vec::new();
    let all = guests();
    assert!(
        all.len() >= 10,
        "the workspace's guests were not found: {all:?}"
    );
    for guest in &all {
        let wasm = format!("{}.wasm", guest.replace('-', "_"));
        let direct = [format!("\"{guest}\""), format!("{{{guest}}}"), wasm.clone()]
            .iter()
            .any(|needle| named_by_a_test(needle));
        let through_a_manifest = manifests.iter().any(|(path, text)| {
            text.contains(&format!("/{wasm}"))
                && named_by_a_test(&format!("\"{}\"", file_name(path)))
        });
        if !direct && !through_a_manifest {
            unused.push(guest.clone());
        }
    }
    assert!(
        unused.is_empty(),
        "these guests are used by no test: {unused:?}; give each a test in tests/ \
         (name it with component(\"NAME\"), or run an example manifest that uses it)"
    );
}

/// The benchmark's step chains its payload (`seq`, `prevId`) from step to
/// step, as `makePayload` in Medusa's harness does, and its failing last step
/// is compensated with the rest.
#[test]
fn the_benchmark_step_chains_its_payload_and_compensates() {
    let sandbox = Sandbox::new();
    let payload = component("payload");
    let manifest = |fail_last: bool| {
        let mut text = String::from("[workflow]\nname = \"payload-chain\"\n");
        for step in 1..=3 {
            let fail = fail_last && step == 3;
            text += &format!(
                "[steps.p{step}]\ncomponent = \"{}\"\nconfig = {{ step = {step}, fail = {fail} }}\n",
                payload.display()
            );
        }
        for step in 1..=3 {
            let input = if step == 1 {
                "input".to_string()
            } else {
                format!("p{}", step - 1)
            };
            text +=
                &format!("[[flow]]\nrun = \"p{step}\"\ninput = \"{input}\"\nas = \"p{step}\"\n");
        }
        text + "[output]\nvalue = \"p3\"\n"
    };
    let done = sandbox.run(
        &sandbox.manifest("ok.toml", &manifest(false)),
        r#"{"id": 7}"#,
    );
    assert_eq!(done.code, 0, "{}", done.stderr);
    let output = &done.report()["output"];
    assert_eq!(output["seq"], 3);
    assert_eq!(output["base"], 7);
    assert_eq!(output["id"], "wf-7-step-3");
    assert_eq!(output["prevId"], "wf-7-step-2");
    assert_eq!(output["items"].as_array().map(Vec::len), Some(18));
    assert_eq!(output["items"][0]["tag"], "7-3-0-xxxxxxxxxxxx");

    let failed = sandbox.run(
        &sandbox.manifest("fail.toml", &manifest(true)),
        r#"{"id": 7}"#,
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(failed.report()["status"], "reverted");
    assert_eq!(
        failed.calls(),
        [
            "invoke p1",
            "invoke p2",
            "invoke p3",
            "compensate p3",
            "compensate p2",
            "compensate p1"
        ]
    );
    // Compensations receive the `undo` data the step returned.
    let trace = failed.report()["trace"].clone();
    assert_eq!(trace[4]["input"], json!({"undo": "wf-7-step-2"}));
}

/// A step built against `wit/compat/0.1.0` (not today's `wit/`) instantiates
/// and uses every capability of that contract; when a later step fails, its
/// compensation undoes what it did.
#[test]
fn a_step_built_against_the_first_released_contract_still_runs() {
    let sandbox = Sandbox::new();
    let compat = component("compat-step");
    let manifest = |then_fail: bool| {
        let mut text = format!(
            r#"
[workflow]
name = "compat"

[config]
greeting = "hello"

[steps.old]
component = "{}"
grants = {{ entities = ["brand"], events = true, config = ["greeting"] }}

[steps.fail]
component = "{{probe}}"
config = {{ fail-always = true, permanent = true }}

[[flow]]
run = "old"
input = "input.name"
as = "old"
"#,
            compat.display()
        );
        if then_fail {
            text += "\n[[flow]]\nrun = \"fail\"\n";
        }
        text
    };
    let done = sandbox.run(
        &sandbox.manifest("ok.toml", &manifest(false)),
        r#"{"name": "Acme"}"#,
    );
    assert_eq!(done.code, 0, "{}", done.stderr);
    let report = done.report();
    assert_eq!(
        report["output"]["old"]["created"]["name"], "Acme",
        "{report:#}"
    );
    assert_eq!(report["output"]["old"]["greeting"], "hello");
    assert!(
        report["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "compat.invoked"),
        "{report:#}"
    );
    assert_eq!(sandbox.rows("brand").len(), 1);

    let reverted = sandbox.run(
        &sandbox.manifest("fail.toml", &manifest(true)),
        r#"{"name": "Beta"}"#,
    );
    assert_eq!(reverted.code, 1, "{}", reverted.stderr);
    assert_eq!(reverted.report()["status"], "reverted");
    // Only the first run's brand is left: the compensation deleted Beta.
    let rows = sandbox.rows("brand");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1["name"], "Acme");
}
