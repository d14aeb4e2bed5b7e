//! JSON Schema checks (workflow and step `input-schema` / `output-schema`),
//! compiled once when the manifest loads.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::json::Json;
use crate::saga::JsonCheck;

/// A compiled JSON Schema.
pub struct Schema {
    path: PathBuf,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles the schema in `text` (read from `path`).
    pub fn compile(path: &Path, text: &str) -> Result<Schema, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("{} is not JSON: {e}", crate::app::display_path(path)))?;
        let validator = jsonschema::validator_for(&value).map_err(|e| {
            format!(
                "{} is not a valid JSON Schema: {e}",
                crate::app::display_path(path)
            )
        })?;
        Ok(Schema {
            path: path.to_path_buf(),
            validator,
        })
    }

    /// The schema's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every violation of `value`, as `at /path: message` lines.
    pub fn violations(&self, value: &serde_json::Value) -> Vec<String> {
        self.validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("at {at}: {e}")
            })
            .collect()
    }
}

impl JsonCheck for Schema {
    fn check(&self, value: &Json) -> Result<(), Vec<String>> {
        let violations = self.violations(value.value());
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schema({})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_violation_with_its_place() {
        let schema = Schema::compile(
            Path::new("s.json"),
            r#"{"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 2}, "n": {"type": "integer"}}}"#,
        )
        .unwrap();
        let violations = schema.violations(&serde_json::json!({"name": "A", "n": "x"}));
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations.iter().any(|v| v.starts_with("at /name:")),
            "{violations:?}"
        );
        assert!(
            violations.iter().any(|v| v.starts_with("at /n:")),
            "{violations:?}"
        );
        assert!(
            schema
                .violations(&serde_json::json!({}))
                .iter()
                .any(|v| v.contains("name"))
        );
        assert!(Schema::compile(Path::new("bad.json"), r#"{"type": 12}"#).is_err());
    }
}
