//! Options of commands that work on a state file (journal + entities).

use std::path::{Path, PathBuf};

use super::{RuntimeArgs, UsageError};
use crate::durable::Host;
use crate::journal::SyncMode;

/// Where the state is and how durable its writes are.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The state file (SQLite: journal and entities) [default: .wasaga/state.db
    /// beside the manifest for `run`, in the current folder otherwise].
    #[arg(long, value_name = "PATH", env = "WASAGA_STATE", global = true)]
    pub state: Option<PathBuf>,
    /// How hard each journaled transition is pushed to disk: `normal`
    /// survives the host dying; `full` also survives power loss (an fsync per
    /// transition).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal, global = true)]
    pub durability: DurabilityArg,
    /// Resume runs whose components changed since they started (refused
    /// otherwise; each acceptance is recorded in the run's history).
    #[arg(long, global = true)]
    pub accept_changed_components: bool,
}

/// `--durability`: the journal's sync mode as the command line names it
/// (the journal itself knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// `synchronous = NORMAL`: survives the host dying, not power loss.
    Normal,
    /// `synchronous = FULL`: an fsync per transition.
    Full,
}

impl From<DurabilityArg> for SyncMode {
    fn from(arg: DurabilityArg) -> SyncMode {
        match arg {
            DurabilityArg::Normal => SyncMode::Normal,
            DurabilityArg::Full => SyncMode::Full,
        }
    }
}

impl StateArgs {
    /// The state file: `--state`, else `.wasaga/state.db` in `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| dir.join(".wasaga").join("state.db"))
    }

    /// Opens an existing state file (commands that read runs).
    pub fn existing(&self) -> Result<PathBuf, UsageError> {
        let path = self.path(Path::new("."));
        if !path.exists() {
            return Err(UsageError(format!(
                "error: no state file at {}\n  pass --state PATH (or set WASAGA_STATE): `host run` keeps its state beside the manifest, in <manifest folder>/.wasaga/state.db",
                path.display()
            )));
        }
        Ok(path)
    }

    /// The durable host over the state file at `path`.
    pub fn host(&self, path: &Path, runtime: &RuntimeArgs) -> Result<Host, UsageError> {
        let (journal, entities) = crate::durable::open_state(path, self.durability.into())
            .map_err(|e| UsageError(format!("error: {e}")))?;
        let host = Host::new(journal, entities, runtime.runtime()?);
        host.accept_changed_components(self.accept_changed_components);
        Ok(host)
    }
}

/// Prints a report as `host run` does: pretty on a terminal, one line otherwise.
pub fn print_report(report: &crate::saga::RunReport, compact: bool) -> Result<(), UsageError> {
    use std::io::IsTerminal;
    let text = if std::io::stdout().is_terminal() && !compact {
        serde_json::to_string_pretty(report)
    } else {
        serde_json::to_string(report)
    }
    .map_err(|e| UsageError(format!("error: cannot print the report: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The exit code of a report: 0 done (or paused), 1 otherwise.
pub fn exit_code(report: &crate::saga::RunReport) -> std::process::ExitCode {
    use crate::saga::RunStatus;
    match report.status {
        RunStatus::Done | RunStatus::Running | RunStatus::Waiting => {
            std::process::ExitCode::SUCCESS
        }
        _ => std::process::ExitCode::from(1),
    }
}
