//! `host check MANIFEST...`: validates manifests and their components, runs nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::manifest::{self, LoadOptions};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifests to check.
    #[arg(required = true, value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
    /// Check only the manifests, not that their components load.
    #[arg(long)]
    manifest_only: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub async fn check(args: CheckArgs) -> Result<ExitCode, UsageError> {
    let runtime = if args.manifest_only {
        None
    } else {
        Some(args.runtime.runtime()?)
    };
    let mut failed = false;
    for path in &args.manifests {
        let loaded = match manifest::load(path, &LoadOptions::default()) {
            Ok(m) => m,
            Err(errors) => {
                eprint!("{}", manifest_errors(&errors).0);
                failed = true;
                continue;
            }
        };
        if let Some(runtime) = &runtime {
            let mut broken = false;
            for spec in &loaded.components {
                if let Err(e) = runtime.load(&spec.path) {
                    eprintln!(
                        "{}: step '{}' ({}): {e}",
                        path.display(),
                        spec.step,
                        spec.declared_at
                    );
                    broken = true;
                }
            }
            if broken {
                failed = true;
                continue;
            }
        }
        println!(
            "{}: ok (workflow '{}', {} steps)",
            path.display(),
            loaded.workflow.name,
            loaded.workflow.steps.len()
        );
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
