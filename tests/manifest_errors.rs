//! Golden manifest errors: every case in `tests/manifest-errors/` is checked with `host check --manifest-only`, and its stderr must equal the `.err` beside it (`WASAGA_BLESS=1` rewrites the `.err` files).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `1` to write the actual output to the `.err` files instead of comparing.
const BLESS: &str = "WASAGA_BLESS";
/// Stands for the cases folder in messages that show absolute paths.
const CASES: &str = "[CASES]";

/// One invalid manifest and its expected rendering.
struct Case {
    /// `<case>` for `<case>.toml`, or the folder name for `<case>/main.toml`.
    name: String,
    /// Where `host` runs (so messages show relative paths).
    dir: PathBuf,
    /// The manifest, relative to `dir`.
    manifest: String,
    /// The expected stderr.
    err: PathBuf,
}

/// The cases folder, as the operating system names it (`host` sees the
/// working directory without symlinks).
fn cases_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifest-errors");
    fs::canonicalize(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths
}

/// Every case: `<case>.toml` at the top, and `<case>/main.toml` in each
/// subfolder except `files/` (helper files). Also returns the problems of the
/// folder itself (an `.err` without its manifest, a subfolder without `main.toml`).
fn discover(root: &Path) -> (Vec<Case>, Vec<String>) {
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for path in sorted_entries(root) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            if name == "files" {
                for helper in sorted_entries(&path) {
                    if extension(&helper) == Some("err") {
                        problems.push(format!(
                            "{}: helper files have no expected output",
                            helper.display()
                        ));
                    }
                }
                continue;
            }
            if !path.join("main.toml").is_file() {
                problems.push(format!(
                    "{}: a case folder needs a main.toml",
                    path.display()
                ));
                continue;
            }
            for file in sorted_entries(&path) {
                if extension(&file) == Some("err") && stem(&file) != "main" {
                    problems.push(format!(
                        "{}: no manifest of that name is checked (only main.toml)",
                        file.display()
                    ));
                }
            }
            cases.push(Case {
                name,
                err: path.join("main.err"),
                dir: path,
                manifest: "main.toml".to_string(),
            });
            continue;
        }
        match extension(&path) {
            Some("toml") => cases.push(Case {
                name: stem(&path),
                dir: root.to_path_buf(),
                manifest: name,
                err: path.with_extension("err"),
            }),
            Some("err") if !path.with_extension("toml").is_file() => {
                problems.push(format!(
                    "{}: no {}.toml beside it",
                    path.display(),
                    stem(&path)
                ));
            }
            _ => {}
        }
    }
    (cases, problems)
}

/// Runs `host check --manifest-only -q` on a case; returns the exit code,
/// stdout and stderr (normalized, see [`normalize`]).
fn run(case: &Case, root: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["check", "--manifest-only", "-q", case.manifest.as_str()])
        .current_dir(&case.dir)
        .env("NO_COLOR", "1")
        .env_remove("WASAGA_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run host: {e}"));
    let stderr = normalize(
        &String::from_utf8_lossy(&output.stderr),
        &root.to_string_lossy(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout, stderr)
}

/// `stderr` with the cases folder `root` written as `[CASES]` (the few
/// messages that quote a path the manifest resolved, such as a schema's,
/// show it absolute).
fn normalize(stderr: &str, root: &str) -> String {
    stderr.replace(root, CASES)
}

/// A line diff of `expected` and `actual`: ` ` both, `-` only expected, `+` only actual.
fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push_str(&format!("  {}\n", old[i]));
            i += 1;
            j += 1;
        } else if j < new.len() && (i == old.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", new[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", old[i]));
            i += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the two differ in the final newline)\n");
    }
    out
}

#[test]
fn manifest_errors_match_their_golden_files() {
    let root = cases_dir();
    // The cases that must get past the component check name `step.wasm`;
    // the loader only checks that it exists, so any bytes will do.
    fs::write(
        root.join("step.wasm"),
        b"not a component: only its existence is checked",
    )
    .unwrap();
    let bless = std::env::var_os(BLESS).is_some_and(|v| v == "1");
    let (cases, mut failures) = discover(&root);
    assert!(!cases.is_empty(), "no cases in {}", root.display());
    for case in &cases {
        let (code, stdout, stderr) = run(case, &root);
        let label = format!(
            "{} ({})",
            case.name,
            case.dir.join(&case.manifest).display()
        );
        if code != Some(2) {
            failures.push(format!(
                "{label}: exit code {code:?}, expected 2\nstdout:\n{stdout}\nstderr:\n{stderr}"
            ));
            continue;
        }
        if !stdout.is_empty() {
            failures.push(format!(
                "{label}: expected nothing on stdout, got:\n{stdout}"
            ));
        }
        if bless {
            fs::write(&case.err, &stderr).unwrap_or_else(|e| panic!("{}: {e}", case.err.display()));
            continue;
        }
        match fs::read_to_string(&case.err) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{label}: stderr differs from {} (- expected, + actual):\n{}",
                case.err.display(),
                diff(&expected, &stderr)
            )),
            Err(e) => failures.push(format!(
                "{label}: cannot read {}: {e}\nactual stderr:\n{stderr}",
                case.err.display()
            )),
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} problems with the {} manifest-error cases (run with {BLESS}=1 to accept the actual output):\n\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        );
    }
}
