//! CEL: compile an expression and evaluate it over a JSON scope, within the
//! expression budget (libFuzzer's `-timeout` and `-rss_limit_mb` catch an
//! evaluation the budget let through that is slow or large).
//! Input: the expression, a NUL byte, then a JSON object of bindings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasaga_core::Json;
use wasaga_core::expr::{Expr, Scope};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0);
    let Ok(source) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let Ok(expr) = Expr::compile(source) else {
        return;
    };
    let mut scope = Scope::default();
    if let Some(bindings) = parts.next().and_then(|b| std::str::from_utf8(b).ok())
        && let Ok(json) = Json::parse(bindings)
        && let Some(object) = json.value().as_object()
    {
        for (name, value) in object {
            scope.bind(name.clone(), Json::from_value(value.clone()));
        }
    }
    if let Ok(result) = expr.eval(&scope) {
        // What the host does next with a result: journal its text, and
        // read it back.
        Json::parse(result.text().to_string()).expect("an expression's result reads back");
    }
});
