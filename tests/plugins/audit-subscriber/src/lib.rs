//! `audit-subscriber`: logs every event it receives as `audit <name> <step>`;
//! fails (on purpose) for events whose name starts with `fail.`. Written
//! against the WIT world `subscriber` with wit-bindgen alone, no SDK.

// The generated bindings are not ours to lint.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "subscriber",
        pub_export_macro: true,
        default_bindings_module: "bindings",
    });
}

use bindings::Guest;

use bindings::RunEvent;
use bindings::wasaga::step::log::{Level, log};

struct Audit;

impl Guest for Audit {
    fn on_event(event: RunEvent) -> Result<(), String> {
        if event.name.starts_with("fail.") {
            return Err(format!("refusing {} on purpose", event.name));
        }
        let step = event.step.as_deref().unwrap_or("-");
        log(
            Level::Info,
            &format!("audit {} {} {}", event.name, step, event.run_id),
        );
        Ok(())
    }
}

bindings::export!(Audit with_types_in bindings);
