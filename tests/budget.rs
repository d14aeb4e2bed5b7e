//! The hot path's instruction budget: one 10-step run of native steps, in
//! memory and durable (SQLite, `normal`), counted by callgrind
//! (`host/examples/hot_path.rs`) and checked against `tests/budget.toml`, so
//! that a change that makes the orchestrator or the journal markedly heavier
//! fails here with the numbers. Instructions, not time: the count does not
//! depend on what else the machine is doing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example binary `cargo test` built beside this test.
fn hot_path() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let path = profile.join("examples").join("hot_path");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test --release` builds it (examples are built with the tests)",
        path.display()
    );
    path
}

/// Instructions callgrind counted inside `measured_*` for `case`.
fn instructions(case: &str) -> u64 {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("callgrind.out");
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*measured_*",
        ])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(hot_path())
        .arg(case)
        .output()
        .expect("valgrind runs (tests/install-toolchains.sh installs it)");
    assert!(
        output.status.success(),
        "valgrind failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    totals(&file)
}

/// The `totals:` (or `summary:`) line of a callgrind output file: its
/// first event is Ir, instructions executed.
fn totals(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ir| ir.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// The committed budget: `case = instructions`, and the margin.
fn budget() -> (toml::Table, f64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/budget.toml");
    let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let margin = table["margin"].as_float().unwrap();
    (table["instructions"].as_table().unwrap().clone(), margin)
}

#[test]
fn the_hot_path_stays_within_its_instruction_budget() {
    if cfg!(debug_assertions) {
        // The budget is for the optimized build the README's test command
        // makes (`cargo test --release`); a debug build runs ~10x more.
        eprintln!("skipped: the instruction budget is checked in release builds only");
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        panic!("valgrind is not installed: tests/install-toolchains.sh installs it");
    }
    let (budgets, margin) = budget();
    let mut over = Vec::new();
    for case in ["memory", "durable"] {
        let budget = budgets[case].as_integer().unwrap() as u64;
        let measured = instructions(case);
        let ratio = measured as f64 / budget as f64;
        println!("{case}: {measured} instructions, budget {budget} ({ratio:.3}×)");
        if ratio > 1.0 + margin {
            over.push(format!(
                "{case}: {measured} instructions, {:.1} % over the budget of {budget} (margin {:.0} %)",
                (ratio - 1.0) * 100.0,
                margin * 100.0
            ));
        } else if ratio < 1.0 - 2.0 * margin {
            println!(
                "  {case} is {:.0} % under its budget: lower it in tests/budget.toml to keep the guard tight",
                (1.0 - ratio) * 100.0
            );
        }
    }
    assert!(
        over.is_empty(),
        "the hot path got heavier:\n{}\nIf that is intended, raise tests/budget.toml and say why in the commit.",
        over.join("\n")
    );
}
