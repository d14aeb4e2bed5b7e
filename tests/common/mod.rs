//! Helpers of the black-box tests: build the guest components once, run the
//! real `host` binary, read its JSON report and the SQLite state file.
#![allow(dead_code)]

pub mod provider;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where cargo puts the guest components.
pub fn wasm_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    target.join("wasm32-wasip2").join("release")
}

/// Every guest crate of the workspace (`tests/plugins/*` and
/// `example-plugins/*/steps/*`), by package name: the tests build them all,
/// and `tests/guests.rs` checks that each is used by a test.
pub fn guests() -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let push_children = |dirs: &mut Vec<PathBuf>, parent: PathBuf| {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            dirs.extend(entries.flatten().map(|e| e.path()));
        }
    };
    push_children(&mut dirs, repo().join("tests").join("plugins"));
    for example in std::fs::read_dir(repo().join("example-plugins"))
        .unwrap()
        .flatten()
    {
        push_children(&mut dirs, example.path().join("steps"));
    }
    for dir in dirs {
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = manifest
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .map(|name| name.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{}: no package name", dir.display()));
        names.push(name);
    }
    names.sort();
    names
}

/// Builds every guest component (once per test process) from source.
pub fn build_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(repo())
            .args(["build", "--release", "--target", "wasm32-wasip2"]);
        for guest in guests() {
            command.args(["-p", &guest]);
        }
        let status = command.status().expect("run cargo");
        assert!(status.success(), "building the guest components failed");
    });
}

/// A guest component's path.
pub fn component(name: &str) -> PathBuf {
    build_guests();
    wasm_dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// A scratch folder: state file, manifests, compiled-component cache.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// What one `host` invocation did.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The JSON report on stdout.
    pub fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON report ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The trace as "action step" lines.
    pub fn calls(&self) -> Vec<String> {
        calls_of(&self.report())
    }
}

/// A report's trace as "action step" lines (the call's node where it has one).
pub fn calls_of(report: &Value) -> Vec<String> {
    report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["action"].as_str().unwrap(),
                t["node"].as_str().or(t["step"].as_str()).unwrap()
            )
        })
        .collect()
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        build_guests();
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state(&self) -> PathBuf {
        self.path("state.db")
    }

    /// Writes a manifest; `{probe}` and `{payload}` stand for those components' paths.
    pub fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let text = text
            .replace("{probe}", &component("probe").display().to_string())
            .replace("{payload}", &component("payload").display().to_string());
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The `host` command with this sandbox's state file and a shared component cache.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
        command
            .env("WASAGA_STATE", self.state())
            .env("WASAGA_CACHE_DIR", cache_dir())
            .env_remove("WASAGA_LOG")
            .env_remove("WASAGA_TOKEN");
        command
    }

    /// Runs `host ARGS` (see [`Sandbox::command`]).
    pub fn host(&self, args: &[&str]) -> Finished {
        let output: Output = self.command().args(args).output().expect("run host");
        Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `host run MANIFEST --input INPUT`.
    pub fn run(&self, manifest: &Path, input: &str) -> Finished {
        self.host(&["run", manifest.to_str().unwrap(), "--input", input])
    }

    /// Rows of a collection in the state file: (id, data, deleted_at).
    pub fn rows(&self, collection: &str) -> Vec<(String, Value, Option<String>)> {
        let conn = rusqlite::Connection::open(self.state()).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT id, data, deleted_at FROM entities WHERE collection = ?1 ORDER BY rowid",
            )
            .unwrap();
        stmt.query_map([collection], |row| {
            let data: String = row.get(1)?;
            Ok((
                row.get(0)?,
                serde_json::from_str(&data).unwrap(),
                row.get(2)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
}

/// One component cache for all tests, so each component compiles once.
pub fn cache_dir() -> PathBuf {
    let dir = wasm_dir()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("wasaga-test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The brand example's manifest `name`.
pub fn brand_manifest(name: &str) -> PathBuf {
    repo().join("example-plugins").join("brand").join(name)
}

/// An RFC 3339 time (as reports give them) in unix ms.
pub fn unix_ms(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// This machine's clock in unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
