//! What the benchmarks share: the repository, and guest components built
//! from source for them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the guest crate `package` for wasm32-wasip2 and returns its
/// component's path.
pub fn guest(package: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .status()
        .expect("run cargo");
    assert!(status.success());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        package.replace('-', "_")
    ))
}
