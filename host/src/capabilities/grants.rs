//! What the manifest grants one step, and the `not-allowed` message that shows
//! the manifest line that would grant what was denied.

use std::collections::BTreeSet;

use super::CapabilityError;
use crate::saga::FailureKind;

/// The capabilities granted to one step (`grants = { ... }` in its manifest entry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// Entity collections it may resolve by name.
    pub entities: BTreeSet<String>,
    /// Whether it may emit events.
    pub events: bool,
    /// `[config]` keys it may read.
    pub config: BTreeSet<String>,
    /// Where to grant more.
    pub place: GrantPlace,
}

/// Where in the manifest a step's grants are written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrantPlace {
    /// The manifest's file name.
    pub file: String,
    /// The step's name.
    pub step: String,
    /// The line of its `grants` key, or of its `[steps.NAME]` header.
    pub line: usize,
}

/// The kind of a capability, for messages.
#[derive(Debug, Clone, Copy)]
pub enum Denied<'a> {
    /// An entity collection.
    Entities(&'a str),
    /// The event emitter.
    Events,
    /// A `[config]` key.
    Config(&'a str),
}

impl Grants {
    /// The `not-allowed` error for `denied`, naming the line to write.
    pub fn deny(&self, denied: Denied<'_>) -> CapabilityError {
        let mut wanted = self.clone();
        let what = match denied {
            Denied::Entities(name) => {
                wanted.entities.insert(name.to_string());
                format!("the entities collection '{name}'")
            }
            Denied::Events => {
                wanted.events = true;
                "emitting events".to_string()
            }
            Denied::Config(key) => {
                wanted.config.insert(key.to_string());
                format!("the config key '{key}'")
            }
        };
        CapabilityError::permanent(
            FailureKind::NotAllowed,
            format!(
                "step '{}' is not granted {what}; to grant it, write in {} under [steps.{}] (line {}): {}",
                self.place.step,
                self.place.file,
                self.place.step,
                self.place.line,
                wanted.to_toml()
            ),
        )
    }

    /// The grants as the manifest line that declares them.
    pub fn to_toml(&self) -> String {
        let list = |set: &BTreeSet<String>| {
            let items: Vec<String> = set.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let mut parts = Vec::new();
        if !self.entities.is_empty() {
            parts.push(format!("entities = {}", list(&self.entities)));
        }
        if self.events {
            parts.push("events = true".to_string());
        }
        if !self.config.is_empty() {
            parts.push(format!("config = {}", list(&self.config)));
        }
        format!("grants = {{ {} }}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denial_shows_the_line_that_would_grant_it() {
        let grants = Grants {
            entities: ["brand".to_string()].into(),
            place: GrantPlace {
                file: "create-brand.toml".into(),
                step: "create-products".into(),
                line: 12,
            },
            ..Grants::default()
        };
        let CapabilityError::Step {
            kind,
            message,
            permanent,
        } = grants.deny(Denied::Entities("product"))
        else {
            panic!("a denial is a step error")
        };
        assert_eq!(kind, FailureKind::NotAllowed);
        assert!(permanent);
        assert_eq!(
            message,
            "step 'create-products' is not granted the entities collection 'product'; to grant it, \
             write in create-brand.toml under [steps.create-products] (line 12): \
             grants = { entities = [\"brand\", \"product\"] }"
        );
    }
}
