//! Building components with the `build` commands their manifests declare
//! (`host build`, and `host run --build`): only those missing or stale.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use super::{UsageError, manifest_errors};
use crate::app::{App as Manifest, BuildSpec, SubscriberKind};
use crate::manifest::{self, LoadOptions};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The manifest whose components to build.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// More folders with extension manifests.
    #[arg(long, value_name = "DIR")]
    extensions: Vec<PathBuf>,
}

pub async fn build_command(args: BuildArgs) -> Result<ExitCode, UsageError> {
    let options = LoadOptions {
        require_components: false,
        extension_dirs: args.extensions.clone(),
        ..crate::capabilities::registry::load_options()
    };
    let manifest = manifest::load(&args.manifest, &options).map_err(|e| manifest_errors(&e))?;
    build_components(&manifest).await?;
    Ok(ExitCode::SUCCESS)
}

/// One component a manifest needs: who needs it, where declared, the file, its build.
struct Needed<'a> {
    who: &'a str,
    declared_at: &'a str,
    path: &'a Path,
    build: Option<&'a BuildSpec>,
}

/// Every component of the manifest: its steps' and its subscribers'.
fn needed(manifest: &Manifest) -> Vec<Needed<'_>> {
    let steps = manifest.components.iter().filter_map(|spec| {
        spec.component().map(|(path, build)| Needed {
            who: &spec.step,
            declared_at: &spec.declared_at,
            path,
            build,
        })
    });
    let subscribers = manifest
        .subscribers
        .iter()
        .filter_map(|spec| match &spec.kind {
            SubscriberKind::Component { path, build, .. } => Some(Needed {
                who: &spec.name,
                declared_at: &spec.declared_at,
                path,
                build: build.as_ref(),
            }),
            SubscriberKind::Command { .. } => None,
        });
    steps.chain(subscribers).collect()
}

/// Runs the build command of every component that is missing or stale, each
/// distinct command once. Build output goes to stderr.
pub async fn build_components(manifest: &Manifest) -> Result<(), UsageError> {
    let mut done: HashSet<(String, PathBuf)> = HashSet::new();
    let needed = needed(manifest);
    for need in &needed {
        let Some(build) = need.build else {
            if !need.path.is_file() {
                return Err(UsageError(format!(
                    "error: '{}' ({}) has no component at {} and no `build` command to make it",
                    need.who,
                    need.declared_at,
                    need.path.display()
                )));
            }
            continue;
        };
        if !is_stale(need.path, build)
            || !done.insert((build.command.clone(), build.workdir.clone()))
        {
            continue;
        }
        tracing::info!(step = %need.who, command = %build.command, "building");
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
                    "error: cannot start the build of '{}': {e}",
                    need.who
                ))
            })?;
        if !status.success() {
            return Err(UsageError(format!(
                "error: building '{}' ({}) failed: `{}` exited with {status} in {}",
                need.who,
                need.declared_at,
                build.command,
                build.workdir.display()
            )));
        }
    }
    for need in &needed {
        if !need.path.is_file() {
            return Err(UsageError(format!(
                "error: after building, '{}' ({}) still has no component at {}\n  the build command must produce that file",
                need.who,
                need.declared_at,
                need.path.display()
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
