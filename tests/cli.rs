//! The `host` command's contract: exit codes, located errors, stdout/stderr, caching.

mod common;

use common::{Sandbox, brand_manifest};

#[test]
fn a_malformed_manifest_is_exit_2_with_file_line_and_column() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "bad.toml",
        "[workflow]\nname = \"w\"\n\n[steps.a]\ncomponnt = \"x.wasm\"\n",
    );
    let run = sandbox.host(&["run", manifest.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    assert!(
        run.stderr
            .contains("bad.toml:5:1: unknown field `componnt`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `component`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_component_is_exit_2_and_says_how_to_build_it() {
    let sandbox = Sandbox::new();
    let manifest = sandbox.manifest(
        "m.toml",
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"nowhere.wasm\"\nbuild = \"make nowhere\"\n[[flow]]\nrun = \"a\"\n",
    );
    let run = sandbox.host(&["run", manifest.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("m.toml:4:13: component file not found"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("host run --build"), "{}", run.stderr);
}

#[test]
fn invalid_json_input_is_exit_2_before_anything_runs() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&brand_manifest("create-brand.toml"), "{name: Acme}");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("the input in --input is not valid JSON"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 1 column 2"), "{}", run.stderr);
    assert!(!sandbox.state().exists(), "no state touched");
}

#[test]
fn a_file_that_is_not_a_component_is_a_clear_error() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("junk.wasm"), b"\0asm junk").unwrap();
    let manifest = sandbox.manifest(
        "m.toml",
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"junk.wasm\"\n[[flow]]\nrun = \"a\"\n",
    );
    let run = sandbox.host(&["run", manifest.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("junk.wasm is not a valid WebAssembly component"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_validates_without_running() {
    let sandbox = Sandbox::new();
    let run = sandbox.host(&[
        "check",
        brand_manifest("setup-brand.toml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("ok (workflow 'setup-brand', 3 steps)"),
        "{}",
        run.stdout
    );
    assert!(!sandbox.state().exists());
}

#[test]
fn the_second_start_loads_compiled_components_from_the_cache() {
    let sandbox = Sandbox::new();
    let cache = sandbox.path("cache");
    let manifest = brand_manifest("create-brand.toml");
    let args = [
        "run",
        manifest.to_str().unwrap(),
        "--input",
        r#"{"name": "Acme"}"#,
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let first = sandbox.host(&args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        first.stderr.matches("component compiled").count(),
        2,
        "{}",
        first.stderr
    );
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 2);
    let second = sandbox.host(&args);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        !second.stderr.contains("component compiled"),
        "recompiled: {}",
        second.stderr
    );
}

#[test]
fn stdout_is_one_json_document_and_progress_goes_to_stderr() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&brand_manifest("create-brand.toml"), r#"{"name": "Acme"}"#);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stderr.contains("run finished"), "{}", run.stderr);
    assert!(
        run.stderr.contains("created brand"),
        "the step's log line: {}",
        run.stderr
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_log_line() {
    let sandbox = Sandbox::new();
    let manifest = brand_manifest("create-brand.toml");
    let run = sandbox.host(&[
        "run",
        manifest.to_str().unwrap(),
        "--input",
        r#"{"name": "Acme"}"#,
        "--log-format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "run finished"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("created brand"),
        "the step's log line: {}",
        run.stderr
    );
}
