//! The host's JSON value: validated text that is parsed, and converted for CEL, at most once.
//!
//! Steps exchange JSON as text. Most values pass from one step to the next
//! untouched, so the text is kept and handed on as is; the parsed form is built
//! only when an expression or a report needs it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// The deepest nesting of arrays and objects a JSON document may have, from a
/// guest, a caller or a file alike (serde_json itself gives up at 128, so a
/// deeper document could be kept as text but never read).
pub const MAX_DEPTH: usize = 100;

/// An immutable JSON document, cheap to clone.
#[derive(Clone)]
pub struct Json(Arc<Inner>);

struct Inner {
    text: Text,
    value: OnceLock<Value>,
    cel: OnceLock<cel::Value>,
    shape: OnceLock<Vec<usize>>,
}

/// A document's text.
enum Text {
    /// Checked by serde_json when the document was made.
    Checked(Box<RawValue>),
    /// Put together by the host from checked documents (it is valid by
    /// construction, so it is not parsed again); the form serde needs to
    /// write it raw is made only if it is ever serialized.
    Composed {
        text: Box<str>,
        raw: OnceLock<Box<RawValue>>,
    },
}

impl Text {
    fn get(&self) -> &str {
        match self {
            Text::Checked(raw) => raw.get(),
            Text::Composed { text, .. } => text,
        }
    }

    fn raw(&self) -> &RawValue {
        match self {
            Text::Checked(raw) => raw,
            Text::Composed { text, raw } => raw.get_or_init(|| {
                RawValue::from_string(text.to_string()).expect("composed of checked JSON")
            }),
        }
    }
}

/// serde_json's reserved object key, after its `$` (which may be escaped).
const RESERVED_KEY: &str = "serde_json::private::RawValue";

impl Json {
    /// Validates `text` as JSON and keeps it. Validation applies the rules of
    /// every later use (nesting at most [`MAX_DEPTH`], numbers that fit a
    /// double, no lone surrogate in a `\u` escape), so that [`Json::value`]
    /// can never fail on a document that was accepted here: what a guest or a
    /// caller sends is refused at the boundary, not when a report reads it.
    pub fn parse(text: impl Into<String>) -> Result<Json, serde_json::Error> {
        let text = RawValue::from_string(text.into())?;
        let value = OnceLock::new();
        match scan(text.get()).or_reserved_key(text.get()) {
            Scan::Plain => {}
            Scan::TooDeep => {
                return Err(serde::de::Error::custom(format!(
                    "JSON nested deeper than {MAX_DEPTH} levels"
                )));
            }
            // Rare forms whose parse can fail: parse now (and keep the value).
            Scan::NeedsParse => {
                let parsed: Value = serde_json::from_str(text.get()).map_err(|e| {
                    // serde_json's own words would not say why (it expected
                    // a string where the reserved key's value was not one).
                    if text.get().contains(RESERVED_KEY) {
                        serde::de::Error::custom(format!(
                            "the object key \"${RESERVED_KEY}\" is reserved and cannot be used ({e})"
                        ))
                    } else {
                        e
                    }
                })?;
                let _ = value.set(parsed);
            }
        }
        Ok(Json(Arc::new(Inner {
            text: Text::Checked(text),
            value,
            cel: OnceLock::new(),
            shape: OnceLock::new(),
        })))
    }

    /// Fails when the document nests deeper than [`MAX_DEPTH`] (a value
    /// built by the host, such as an expression's result, is checked before
    /// it is journaled: a later [`Json::parse`] of its text must succeed).
    pub fn check_depth(&self) -> Result<(), String> {
        match scan(self.text()) {
            Scan::TooDeep => Err(format!("its result nests deeper than {MAX_DEPTH} levels")),
            _ => Ok(()),
        }
    }

    /// Wraps an already parsed value.
    pub fn from_value(value: Value) -> Json {
        let text = serde_json::value::to_raw_value(&value).expect("a JSON value serializes");
        Json(Arc::new(Inner {
            text: Text::Checked(text),
            value: OnceLock::from(value),
            cel: OnceLock::new(),
            shape: OnceLock::new(),
        }))
    }

    /// The object `{"key": value, ...}` built from the values' texts,
    /// without parsing them (an event carrying a step's output costs a copy,
    /// not a parse and a serialization). It may nest one level deeper than
    /// [`MAX_DEPTH`] (its values may each reach it); serde_json still reads
    /// it.
    pub fn object(fields: &[(&str, &Json)]) -> Json {
        let size: usize = fields
            .iter()
            .map(|(k, v)| k.len() + v.text().len() + 4)
            .sum();
        let mut text = String::with_capacity(size + 2);
        text.push('{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(key).expect("a string serializes"));
            text.push(':');
            text.push_str(value.text());
        }
        text.push('}');
        Json(Arc::new(Inner {
            text: Text::Composed {
                text: text.into_boxed_str(),
                raw: OnceLock::new(),
            },
            value: OnceLock::new(),
            cel: OnceLock::new(),
            shape: OnceLock::new(),
        }))
    }

    /// A JSON string.
    pub fn string(s: &str) -> Json {
        Json::from_value(Value::String(s.to_string()))
    }

    /// JSON `null`.
    pub fn null() -> Json {
        Json::from_value(Value::Null)
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.text.get()
    }

    /// The parsed value (parsed on first use).
    pub fn value(&self) -> &Value {
        self.0.value.get_or_init(|| {
            serde_json::from_str(self.text()).expect("Json text was validated when created")
        })
    }

    /// The value as CEL sees it (converted on first use).
    pub fn cel(&self) -> &cel::Value {
        self.0.cel.get_or_init(|| to_cel(self.value()))
    }

    /// Level by level (the value itself first), the length of the longest
    /// list, map or string: what an expression's price is computed from
    /// (found on first use).
    pub fn shape(&self) -> &[usize] {
        self.0.shape.get_or_init(|| {
            let mut shape: Vec<usize> = Vec::new();
            let mut stack = vec![(self.value(), 0usize)];
            while let Some((value, level)) = stack.pop() {
                let length = match value {
                    Value::String(s) => s.len(),
                    Value::Array(items) => {
                        stack.extend(items.iter().map(|item| (item, level + 1)));
                        items.len()
                    }
                    Value::Object(map) => {
                        for (key, item) in map {
                            stack.push((item, level + 1));
                            if shape.len() <= level + 1 {
                                shape.resize(level + 2, 0);
                            }
                            shape[level + 1] = shape[level + 1].max(key.len());
                        }
                        map.len()
                    }
                    _ => 0,
                };
                if shape.len() <= level {
                    shape.resize(level + 1, 0);
                }
                shape[level] = shape[level].max(length);
            }
            shape
        })
    }

    /// Whether this is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.text() == "null"
    }

    /// Whether two handles share one document (no comparison of contents).
    pub fn same(&self, other: &Json) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a cheap scan of valid JSON text found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Nothing a full parse could refuse.
    Plain,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An exponent, a very long number or a `\u` escape of a surrogate: a
    /// full parse decides.
    NeedsParse,
}

impl Scan {
    /// A plain document that might hold serde_json's reserved object key
    /// (`"$serde_json::private::RawValue"`, which its `Value` reads as a
    /// value of another shape, or refuses), literally or behind `\u`
    /// escapes, is parsed in full at the boundary: refused there if
    /// serde_json cannot read it, instead of failing a later use (the fuzz
    /// target `json` found `{"$serde_json::private::RawValue": [...]}`).
    fn or_reserved_key(self, text: &str) -> Scan {
        match self {
            Scan::Plain if text.contains("$serde_json") || text.contains("\\u") => Scan::NeedsParse,
            other => other,
        }
    }
}

/// Scans JSON text (already known to be well formed) for its depth and for
/// the forms a full parse may refuse, without allocating.
fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut needs_parse) = (0usize, 0usize, false);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        let surrogate = bytes.get(i + 1) == Some(&b'u')
                            && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
                            && matches!(
                                bytes.get(i + 3),
                                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                            );
                        needs_parse |= surrogate;
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Scan::TooDeep;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                    needs_parse |= matches!(bytes[i], b'e' | b'E');
                }
                needs_parse |= i - start > 20;
            }
            _ => {}
        }
        i += 1;
    }
    if needs_parse {
        Scan::NeedsParse
    } else {
        Scan::Plain
    }
}

/// JSON as CEL values: integers are CEL `int` (so `n + 1` works), unless
/// they only fit a `uint`; other numbers are `double`.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: std::collections::HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::Map(entries.into())
        }
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.same(other) || self.text() == other.text() || self.value() == other.value()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.text.raw().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        Value::deserialize(deserializer).map(Json::from_value)
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_and_parses_lazily() {
        let json = Json::parse(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(json.text(), r#"{"a": [1, 2]}"#);
        assert_eq!(json.value()["a"][1], 2);
        assert_eq!(serde_json::to_string(&json).unwrap(), r#"{"a": [1, 2]}"#);
    }

    /// serde_json's reserved key makes its `Value` read an object as
    /// something else, or fail: such a document is decided at the boundary,
    /// so that every later read of an accepted one agrees (fuzz target
    /// `json`, `fuzz/regressions/json/`).
    #[test]
    fn serde_jsons_reserved_key_is_decided_at_the_boundary() {
        let found = "{\"$serde_json::private::RawValue\": [{\"eku\": 66666666471264421}]}\n";
        let escaped = r#"{"\u0024serde_json::private::RawValue": [1]}"#;
        for refused in [found, escaped] {
            let error = Json::parse(refused).unwrap_err().to_string();
            assert!(
                error.starts_with(
                    "the object key \"$serde_json::private::RawValue\" is reserved and cannot be used ("
                ),
                "{error}"
            );
        }
        for text in [
            r#"{"$serde_json::private::RawValue": "1"}"#,
            r#"{"\u00e9": 1}"#,
        ] {
            let json = Json::parse(text).unwrap();
            let again = Json::parse(json.text().to_string()).unwrap();
            assert_eq!(again.value(), json.value());
            let _ = Json::object(&[("output", &json)]).value();
        }
    }

    #[test]
    fn an_object_is_built_from_texts() {
        let output = Json::parse(r#"{"id": "b1", "tags": ["x"]}"#).unwrap();
        let event = Json::object(&[
            ("step", &Json::string("a \"quoted\" step")),
            ("output", &output),
        ]);
        assert_eq!(
            event.value(),
            &serde_json::json!({"step": "a \"quoted\" step", "output": {"id": "b1", "tags": ["x"]}})
        );
        assert_eq!(Json::object(&[]).text(), "{}");
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"step":"a \"quoted\" step","output":{"id": "b1", "tags": ["x"]}}"#
        );
    }

    #[test]
    fn an_object_of_values_as_deep_as_allowed_is_still_read() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let output = Json::parse(deep).unwrap();
        let event = Json::object(&[("output", &output)]);
        assert!(event.value()["output"].is_array());
        assert!(serde_json::to_string(&event).is_ok());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Json::parse("{not json").is_err());
        assert!(Json::parse("").is_err());
    }

    #[test]
    fn what_a_later_read_would_refuse_is_refused_when_parsed() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(Json::parse(deep(MAX_DEPTH)).is_ok());
        let err = Json::parse(deep(MAX_DEPTH + 1)).unwrap_err();
        assert!(
            err.to_string().contains("nested deeper than 100 levels"),
            "{err}"
        );
        // Deeper than serde_json's own limit, inside an object and past strings.
        let object = format!("{{\"a\": \"[[[\", \"b\": {}}}", deep(1000));
        assert!(Json::parse(object).is_err());
        for refused in ["1e400", "[-1e400]", "\"\\ud800\"", "{\"k\": \"\\uDFFF\"}"] {
            assert!(Json::parse(refused).is_err(), "{refused}");
        }
        for accepted in [
            "1e300",
            "\"\\ud83d\\ude00\"",
            "12345678901234567890123456789",
            "\"[[[[\"",
        ] {
            let json = Json::parse(accepted).unwrap_or_else(|e| panic!("{accepted}: {e}"));
            let _ = json.value();
        }
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(
            Json::parse("{\"a\":1}").unwrap(),
            Json::parse("{ \"a\" : 1 }").unwrap()
        );
        assert!(Json::null().is_null());
    }
}
