//! How `host serve` starts on a folder where not every manifest loads: it
//! serves those that do and reports each one that does not (with the
//! located message and fix), refuses with `--strict`, and with `--build`
//! builds the components first, as `host run --build` does.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Sandbox;
use serde_json::Value;

/// A folder with a good workflow, `greet`, and `later`, whose component is
/// missing until its `build` command (a copy of the probe) makes it.
fn folder(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    let probe = common::component("probe");
    sandbox.manifest(
        "workflows/greet.toml",
        "[workflow]\nname = \"greet\"\n[steps.hello]\ncomponent = \"{probe}\"\nconfig = { output = 1 }\n[[flow]]\nrun = \"hello\"\n",
    );
    sandbox.manifest(
        "workflows/later.toml",
        &format!(
            "[workflow]\nname = \"later\"\n[steps.made]\ncomponent = \"made/probe.wasm\"\nbuild = \"mkdir -p made && cp {} made/probe.wasm\"\nconfig = {{ output = 2 }}\n[[flow]]\nrun = \"made\"\n",
            probe.display()
        ),
    );
    dir
}

fn serve(sandbox: &Sandbox, dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("WASAGA_STATE", sandbox.state())
        .env("WASAGA_CACHE_DIR", common::cache_dir())
        .env_remove("WASAGA_TOKEN")
        .env_remove("WASAGA_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The workflows a started server lists, and what it said on stderr.
fn served(mut child: Child) -> (Vec<String>, String) {
    let base = common::server::listening_address(&mut child);
    let mut response = ureq::get(&format!("{base}/workflows")).call().unwrap();
    let listed: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut names: Vec<String> = listed["workflows"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    (names, stderr)
}

#[test]
fn a_folder_with_a_manifest_that_does_not_load_serves_the_others_and_says_why() {
    let sandbox = Sandbox::new();
    let dir = folder(&sandbox);
    let (names, stderr) = served(serve(&sandbox, &dir, &[]));
    assert_eq!(names, ["greet"]);
    assert!(
        stderr.contains("later.toml:4:13: component file not found:"),
        "{stderr}"
    );
    assert!(stderr.contains("`host serve --build`"), "{stderr}");
    assert!(
        stderr.contains("not serving") && stderr.contains("later.toml"),
        "{stderr}"
    );
}

#[test]
fn strict_refuses_to_start_with_the_located_error() {
    let sandbox = Sandbox::new();
    let dir = folder(&sandbox);
    let output = serve(&sandbox, &dir, &["--strict"])
        .wait_with_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("later.toml:4:13: component file not found"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "it listened: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn build_makes_the_missing_components_and_serves_every_workflow() {
    let sandbox = Sandbox::new();
    let dir = folder(&sandbox);
    let (names, stderr) = served(serve(&sandbox, &dir, &["--build"]));
    assert_eq!(names, ["greet", "later"], "{stderr}");
    assert!(dir.join("made/probe.wasm").is_file());
    assert!(!stderr.contains("not serving"), "{stderr}");
}

#[test]
fn a_folder_where_nothing_loads_is_refused() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "[workflow]\nname = \"a\"\n[[flow]]\nrun = \"nope\"\n",
    )
    .unwrap();
    let output = serve(&sandbox, &dir, &[]).wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown step 'nope'"), "{stderr}");
    assert!(
        stderr.contains("none of the 1 workflow manifests loaded"),
        "{stderr}"
    );
}
