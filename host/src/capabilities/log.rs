//! `log`: a step's log lines go to the host's log (stderr), tagged with the
//! step. Every step may log: it has no grant. A call's lines are bounded
//! (like its stdout and stderr) and each stays one line: a guest cannot fill
//! the disk through the log or forge a line that looks like the host's.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use wasmtime::component::Linker;

use super::bindings::wasaga::step::log::{self, Host, Level};
use super::{CallCapabilities, Capabilities, CapabilityView, ViewOf};

/// The most bytes of log messages one call attempt may write.
pub const MAX_BYTES_PER_CALL: usize = 64 << 10;

/// The line to log for `message`, with control characters (newlines
/// included) escaped; `None` once the call has used its budget (the call is
/// told once, by a last line saying so).
fn admit<'a>(call: &CallCapabilities, message: &'a str) -> Option<Cow<'a, str>> {
    let before = call.logged.fetch_add(message.len(), Ordering::Relaxed);
    if before > MAX_BYTES_PER_CALL {
        return None;
    }
    if before + message.len() > MAX_BYTES_PER_CALL {
        return Some(Cow::Owned(format!(
            "(the step wrote more than {} KiB of log in this call; the rest is dropped)",
            MAX_BYTES_PER_CALL >> 10
        )));
    }
    if !message.chars().any(char::is_control) {
        return Some(Cow::Borrowed(message));
    }
    let escaped = message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    Some(Cow::Owned(escaped))
}

/// Links `log`.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, view: ViewOf<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, Capabilities>(linker, view)
}

impl Host for CapabilityView<'_> {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let Some(message) = admit(self.call, &message) else {
            return Ok(());
        };
        let message = self.call.scrub(&message);
        let (step, run) = (&*self.call.node, &*self.call.run_id);
        match level {
            Level::Trace => tracing::trace!(target: "step", step, run, "{message}"),
            Level::Debug => tracing::debug!(target: "step", step, run, "{message}"),
            Level::Info => tracing::info!(target: "step", step, run, "{message}"),
            Level::Warn => tracing::warn!(target: "step", step, run, "{message}"),
            Level::Error => tracing::error!(target: "step", step, run, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{call_with, grants_of};

    #[test]
    fn a_line_stays_one_line() {
        let call = call_with(grants_of("events = false"));
        assert_eq!(admit(&call, "plain").as_deref(), Some("plain"));
        assert_eq!(
            admit(&call, "ok\n2026-12-01 INFO host: run done\r").as_deref(),
            Some("ok\\n2026-12-01 INFO host: run done\\r")
        );
    }

    #[test]
    fn a_call_s_log_is_bounded() {
        let call = call_with(grants_of("events = false"));
        let line = "x".repeat(1000);
        let mut written = 0;
        let mut last = String::new();
        for _ in 0..1000 {
            match admit(&call, &line) {
                Some(text) => {
                    written += text.len();
                    last = text.into_owned();
                }
                None => break,
            }
        }
        assert!(written <= MAX_BYTES_PER_CALL + 200, "{written}");
        assert!(last.contains("the rest is dropped"), "{last}");
        assert!(admit(&call, "more").is_none());
    }
}
