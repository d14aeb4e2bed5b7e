//! Who executes a run: a host process, named so that another process on the
//! same machine can tell whether it is still alive (its lease is then void
//! without waiting for it to expire).

/// A host process that holds leases on runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    id: String,
}

impl Owner {
    /// This process: `<hostname>:<pid>:<start time>`.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            id: format!(
                "{}:{pid}:{}",
                hostname(),
                start_time(pid).unwrap_or_default()
            ),
        }
    }

    /// The owner an id stored in the journal names (tools and tests: a
    /// host that is not this process).
    pub fn from_id(id: impl Into<String>) -> Owner {
        Owner { id: id.into() }
    }

    /// Its id as stored in the journal.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the process named `id` is alive. A process on another machine
    /// is presumed alive (its lease expires instead).
    pub fn is_alive(id: &str) -> bool {
        let mut parts = id.rsplitn(3, ':');
        let (Some(started), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next())
        else {
            return true;
        };
        if host != hostname() {
            return true;
        }
        match pid.parse::<u32>().ok().map(start_time) {
            Some(Some(now)) => now.to_string() == started,
            Some(None) => false,
            None => true,
        }
    }
}

/// The machine's name in owner ids: `WASAGA_NODE_NAME` if set, else the
/// hostname. Hosts under different names never judge each other by pid,
/// only by lease (set it where hostnames are not unique, or to have hosts
/// on one machine behave as on many).
fn hostname() -> String {
    if let Ok(name) = std::env::var("WASAGA_NODE_NAME")
        && !name.is_empty()
    {
        return name.replace(':', "-");
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// When the process started (clock ticks since boot), if it exists and has
/// not ended (a killed process its parent has not reaped yet is a zombie:
/// it holds its pid but runs nothing).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_not() {
        let me = Owner::current();
        assert!(Owner::is_alive(me.id()));
        let host = hostname();
        assert!(!Owner::is_alive(&format!("{host}:{}:1", u32::MAX - 7)));
        // A reused pid (other start time) is not the same process.
        assert!(!Owner::is_alive(&format!(
            "{host}:{}:0",
            std::process::id()
        )));
        assert!(Owner::is_alive("elsewhere:1:1"));
        // A killed child not reaped yet (a zombie) is not alive.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = start_time(child.id()).unwrap();
        let zombie = format!("{host}:{}:{started}", child.id());
        assert!(Owner::is_alive(&zombie));
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Owner::is_alive(&zombie) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!Owner::is_alive(&zombie), "a zombie counts as dead");
        child.wait().unwrap();
    }
}
