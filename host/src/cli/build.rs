//! Building components with the `build` commands their manifests declare
//! (`host build`, and `host run --build`): only those missing or stale.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::{UsageError, manifest_errors};
use crate::manifest::{self, BuildSpec, LoadOptions, Manifest};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The manifest whose components to build.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
}

pub async fn build_command(args: BuildArgs) -> Result<ExitCode, UsageError> {
    let manifest = manifest::load(
        &args.manifest,
        &LoadOptions {
            require_components: false,
        },
    )
    .map_err(|e| manifest_errors(&e))?;
    build_components(&manifest).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the build command of every component that is missing or stale, each
/// distinct command once. Build output goes to stderr.
pub async fn build_components(manifest: &Manifest) -> Result<(), UsageError> {
    let mut done: HashSet<(String, PathBuf)> = HashSet::new();
    for spec in &manifest.components {
        let Some(build) = &spec.build else {
            if !spec.path.is_file() {
                return Err(UsageError(format!(
                    "error: step '{}' ({}) has no component at {} and no `build` command to make it",
                    spec.step,
                    spec.declared_at,
                    spec.path.display()
                )));
            }
            continue;
        };
        if !is_stale(&spec.path, build) {
            continue;
        }
        if !done.insert((build.command.clone(), build.workdir.clone())) {
            continue;
        }
        tracing::info!(step = %spec.step, command = %build.command, "building");
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&build.workdir)
            // Keep stdout for the run's JSON: the build's output goes to stderr.
            .stdout(std::io::stderr())
            .status()
            .await
            .map_err(|e| {
                UsageError(format!(
                    "error: cannot start the build of step '{}': {e}",
                    spec.step
                ))
            })?;
        if !status.success() {
            return Err(UsageError(format!(
                "error: building step '{}' ({}) failed: `{}` exited with {status} in {}",
                spec.step,
                spec.declared_at,
                build.command,
                build.workdir.display()
            )));
        }
    }
    for spec in &manifest.components {
        if !spec.path.is_file() {
            return Err(UsageError(format!(
                "error: after building, step '{}' ({}) still has no component at {}\n  the build command must produce that file",
                spec.step,
                spec.declared_at,
                spec.path.display()
            )));
        }
    }
    Ok(())
}

/// Missing, or older than a watched file; without `watch`, the build tool
/// decides (cargo, say, is incremental), so the command always runs.
fn is_stale(component: &Path, build: &BuildSpec) -> bool {
    let Ok(built) = component.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    if build.watch.is_empty() {
        return true;
    }
    build
        .watch
        .iter()
        .any(|pattern| newest(&build.workdir, pattern).is_some_and(|t| t > built))
}

fn newest(dir: &Path, pattern: &str) -> Option<SystemTime> {
    let full = dir.join(pattern);
    glob::glob(&full.to_string_lossy())
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
        .max()
}
