//! `host check MANIFEST...`: validates manifests and their components, runs nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::{RuntimeArgs, UsageError, manifest_errors};
use crate::capabilities::EntityStore;
use crate::manifest::{self, LoadOptions};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifests to check.
    #[arg(required = true, value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
    /// Check only the manifests, not that their components load.
    #[arg(long)]
    manifest_only: bool,
    /// More folders with extension manifests.
    #[arg(long, value_name = "DIR")]
    extensions: Vec<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub async fn check(args: CheckArgs) -> Result<ExitCode, UsageError> {
    let runtime = if args.manifest_only {
        None
    } else {
        Some(args.runtime.runtime()?)
    };
    let options = LoadOptions {
        extension_dirs: args.extensions.clone(),
        ..crate::capabilities::registry::load_options()
    };
    let mut failed = false;
    for path in &args.manifests {
        let loaded = match manifest::load(path, &options) {
            Ok(m) => m,
            Err(errors) => {
                eprint!("{}", manifest_errors(&errors).0);
                failed = true;
                continue;
            }
        };
        let (name, steps) = (loaded.workflow.name.clone(), loaded.workflow.steps.len());
        if let Some(runtime) = &runtime {
            // Loading binds every component to the contract, as a run would.
            let entities = Arc::new(EntityStore::in_memory()?);
            if let Err(e) = crate::workflow::load(loaded, runtime, entities) {
                eprintln!("{}: {e}", path.display());
                failed = true;
                continue;
            }
        }
        println!("{}: ok (workflow '{name}', {steps} steps)", path.display());
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
