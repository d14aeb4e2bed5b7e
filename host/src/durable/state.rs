//! Where a host keeps its state (a SQLite state file or a PostgreSQL
//! database) and opening its journal and entity store there. It may not
//! run or resume anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::capabilities::EntityStore;
use crate::journal::Journal;

/// Where a host keeps its state: a SQLite file (the embedded default), or
/// a PostgreSQL database shared by several hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// The SQLite state file.
    File(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl StateLocation {
    /// `postgres://...` (or `postgresql://...`) names a database; anything
    /// else a file.
    pub fn parse(text: &str) -> StateLocation {
        if crate::postgres::is_url(text) {
            StateLocation::Postgres(text.to_string())
        } else {
            StateLocation::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLocation::File(path) => write!(f, "{}", path.display()),
            StateLocation::Postgres(url) => f.write_str(&crate::postgres::hide_password(url)),
        }
    }
}

/// The journal and the entity store of one state.
pub type State = (Arc<dyn Journal>, Arc<EntityStore>);

/// Opens the journal and the entities store at `location`: a state file
/// (creating its folder), or a PostgreSQL database (migrating its schema).
pub fn open_state(
    location: &StateLocation,
    durability: crate::journal::SyncMode,
) -> Result<State, String> {
    match location {
        StateLocation::File(path) => open_state_file(path, durability),
        StateLocation::Postgres(url) => {
            let database = crate::postgres::Database::connect(url, durability)?;
            Ok((
                Arc::new(crate::journal::PgJournal::new(database.clone())),
                Arc::new(EntityStore::postgres(database)),
            ))
        }
    }
}

/// Opens the journal and the entities store of a state file, creating its folder.
pub fn open_state_file(path: &Path, durability: crate::journal::SyncMode) -> Result<State, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state folder {}: {e}", dir.display()))?;
    }
    let journal = crate::journal::SqliteJournal::open(path, durability)
        .map_err(|e| format!("cannot open the state file {}: {e}", path.display()))?;
    // One connection and one group commit for both (see
    // `SqliteJournal::connection`).
    let entities = EntityStore::sharing(journal.shared_commits());
    Ok((Arc::new(journal), Arc::new(entities)))
}
