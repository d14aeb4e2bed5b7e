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
    let compiled = |extension: &str| {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some(extension.as_ref()))
            .count()
    };
    assert_eq!(compiled("cwasm"), 2);
    let second = sandbox.host(&args);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        !second.stderr.contains("component compiled"),
        "recompiled: {}",
        second.stderr
    );
}

#[test]
fn a_component_replaced_at_the_same_path_is_not_served_from_the_cache() {
    let sandbox = Sandbox::new();
    let cache = sandbox.path("cache");
    let step = sandbox.path("step.wasm");
    std::fs::copy(common::component("probe"), &step).unwrap();
    // Old enough for the cache to remember its hash under its identity.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let manifest = sandbox.manifest(
        "m.toml",
        &format!(
            "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"{}\"\nconfig = {{ output = 1 }}\n[[flow]]\nrun = \"a\"\n",
            step.display()
        ),
    );
    let args = [
        "run",
        manifest.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    for _ in 0..2 {
        let run = sandbox.host(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    // Its hash is remembered beside the compiled code: the next start does
    // not read and hash the file.
    let remembered = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("source".as_ref()))
        .count();
    assert_eq!(remembered, 1);
    // Overwritten in place by bytes of the same size that are not a
    // component, its modification time set back, and left to settle: only
    // its change time tells it from the file whose hash was remembered.
    let modified = std::fs::metadata(&step).unwrap().modified().unwrap();
    let size = std::fs::metadata(&step).unwrap().len() as usize;
    std::fs::write(&step, vec![b'x'; size]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&step)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let run = sandbox.host(&args);
    assert_ne!(run.code, 0, "served from the cache: {}", run.stdout);
    assert!(run.stderr.contains("step.wasm"), "{}", run.stderr);
    // Replaced by another file (a rename) at once: read again too.
    let replacement = sandbox.path("replacement.wasm");
    std::fs::write(&replacement, b"not a component either").unwrap();
    std::fs::rename(&replacement, &step).unwrap();
    let run = sandbox.host(&args);
    assert_ne!(run.code, 0, "served from the cache: {}", run.stdout);
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
