//! Options of commands that work on a state file (journal + entities).

use std::path::Path;

use super::{RuntimeArgs, UsageError};
use crate::durable::{Host, StateLocation};
use crate::journal::SyncMode;

/// Where the state is and how durable its writes are.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// Where the journal and the entities are: a SQLite state file, or a
    /// PostgreSQL database shared by several hosts (`postgres://user@host:port/db`)
    /// [default: .wasaga/state.db beside the manifest for `run`, in the
    /// current folder otherwise].
    #[arg(long, value_name = "PATH|URL", env = "WASAGA_STATE", global = true)]
    pub state: Option<String>,
    /// How hard each journaled transition is pushed to disk: `normal`
    /// survives the host dying; `full` also survives power loss (an fsync per
    /// transition). On PostgreSQL: `synchronous_commit` off (survives a host
    /// crash, not a database server crash) or on.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal, global = true)]
    pub durability: DurabilityArg,
    /// How long a host's lease on a run lasts without renewal (renewed every
    /// third of it): how long the runs of a host that vanished wait before
    /// another host takes them over.
    #[arg(long, value_name = "DURATION", default_value = "10s", global = true)]
    pub lease: String,
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
    /// The state: `--state`, else `.wasaga/state.db` in `dir`.
    pub fn location(&self, dir: &Path) -> StateLocation {
        match &self.state {
            Some(state) => StateLocation::parse(state),
            None => StateLocation::File(dir.join(".wasaga").join("state.db")),
        }
    }

    /// An existing state (commands that read runs): a database, or a state
    /// file that is there.
    pub fn existing(&self) -> Result<StateLocation, UsageError> {
        let location = self.location(Path::new("."));
        if let StateLocation::File(path) = &location
            && !path.exists()
        {
            return Err(UsageError(format!(
                "error: no state file at {}\n  pass --state PATH (or set WASAGA_STATE): `host run` keeps its state beside the manifest, in <manifest folder>/.wasaga/state.db",
                path.display()
            )));
        }
        Ok(location)
    }

    /// Opens the journal and the entities at `location`.
    pub fn open(&self, location: &StateLocation) -> Result<crate::durable::State, UsageError> {
        crate::durable::open_state(location, self.durability.into())
            .map_err(|e| UsageError(format!("error: {e}")))
    }

    /// `--lease`.
    pub fn lease(&self) -> Result<std::time::Duration, UsageError> {
        let lease = crate::manifest::parse_duration(&self.lease)
            .map_err(|e| UsageError(format!("error: --lease: {e}")))?;
        if lease < std::time::Duration::from_millis(300) {
            return Err(UsageError(
                "error: --lease must be at least 300ms (it is renewed every third of it)".into(),
            ));
        }
        Ok(lease)
    }

    /// The durable host over the state at `location`.
    pub fn host(
        &self,
        location: &StateLocation,
        runtime: &RuntimeArgs,
    ) -> Result<Host, UsageError> {
        let (journal, entities) = self.open(location)?;
        let host = Host::with_lease(journal, entities, runtime.runtime()?, self.lease()?)
            .traced(super::telemetry());
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

/// The exit code of a report: 0 done (or paused), 75 stopped unrecorded
/// (resumable), 1 otherwise.
pub fn exit_code(report: &crate::saga::RunReport) -> std::process::ExitCode {
    use crate::saga::RunStatus;
    match report.status {
        // Stopped before its end because it could not be recorded (the
        // journal failed, or the lease was lost): not finished, try again
        // (EX_TEMPFAIL; `host resume` continues it).
        RunStatus::Running if report.error.is_some() => std::process::ExitCode::from(75),
        RunStatus::Done | RunStatus::Running | RunStatus::Waiting | RunStatus::Queued => {
            std::process::ExitCode::SUCCESS
        }
        _ => std::process::ExitCode::from(1),
    }
}
