//! Data-mapping and condition expressions in CEL, compiled once per manifest.
//!
//! An expression sees `input` (the workflow input) and every `as` name bound
//! before it. CEL always terminates, so a manifest cannot hang the host. A bare
//! name or field path (`brand`, `brand.id`) is resolved directly on the JSON,
//! without CEL, since that is what most flow entries use.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use crate::json::Json;

mod cost;

pub use cost::{MAX_COST, MAX_NESTING};

/// The longest expression text (a mapping or a condition, not a program;
/// longer ones belong in a step).
pub const MAX_SOURCE: usize = 8 * 1024;

/// The largest result an expression may produce, as JSON text (a step's
/// output has the same bound).
pub const MAX_RESULT: usize = 8 << 20;

/// The price past which an evaluation moves off its async worker thread
/// (a few milliseconds of work; cheaper ones are not worth the hand-over).
const OFF_WORKER_COST: f64 = 200_000.0;

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The CEL environment: the standard library, built once per process.
static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// A compiled expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    kind: Kind,
    variables: Vec<String>,
}

#[derive(Debug)]
enum Kind {
    /// `name` or `name.field.field`: a lookup in the JSON.
    Path(Vec<String>),
    /// Anything else.
    Cel(cel::Program),
}

/// An expression that does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the expression where the problem is, when known.
    pub offset: Option<usize>,
}

/// An expression that failed on the data it was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expression `{expression}` failed: {message}")]
pub struct EvalError {
    /// The expression's text.
    pub expression: String,
    /// What went wrong.
    pub message: String,
}

/// The names an expression can see, with their values.
#[derive(Clone, Default, Debug)]
pub struct Scope {
    vars: HashMap<String, Json>,
}

impl Scope {
    /// A scope with the workflow input bound to `input`.
    pub fn with_input(input: Json) -> Scope {
        let mut scope = Scope::default();
        scope.bind("input", input);
        scope
    }

    /// Binds (or rebinds) `name`.
    pub fn bind(&mut self, name: impl Into<String>, value: Json) {
        self.vars.insert(name.into(), value);
    }

    /// The value bound to `name`.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.vars.get(name)
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Json)> {
        self.vars.iter()
    }
}

impl Expr {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Expr, CompileError> {
        if let Some(path) = simple_path(source) {
            let variables = vec![path[0].clone()];
            return Ok(Expr {
                source: source.to_string(),
                kind: Kind::Path(path),
                variables,
            });
        }
        if source.len() > MAX_SOURCE {
            return Err(CompileError {
                message: format!(
                    "the expression is {} bytes long, more than {MAX_SOURCE}; move this logic into a step",
                    source.len()
                ),
                offset: None,
            });
        }
        let program = ENV.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            CompileError {
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errors.to_string()),
                offset: first.and_then(|e| offset_of(source, e.pos)),
            }
        })?;
        if cost::nesting(program.expression(), MAX_NESTING) > MAX_NESTING {
            return Err(CompileError {
                message: format!(
                    "the expression nests deeper than {MAX_NESTING} levels; split it with a transform step"
                ),
                offset: None,
            });
        }
        let mut free = std::collections::BTreeSet::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        let variables = free.into_iter().collect();
        Ok(Expr {
            source: source.to_string(),
            kind: Kind::Cel(program),
            variables,
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names the expression refers to (not the variables its macros bind).
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Evaluates the expression over `scope`.
    pub fn eval(&self, scope: &Scope) -> Result<Json, EvalError> {
        match &self.kind {
            Kind::Path(path) => self.eval_path(path, scope),
            Kind::Cel(program) => {
                let price = cost::price_with_copies(
                    program.expression(),
                    &|name| {
                        scope.get(name).map_or_else(Vec::new, |value| {
                            value.shape().iter().map(|&n| n as f64).collect()
                        })
                    },
                    &|name, fields| {
                        let mut value = scope.get(name)?.value();
                        for field in fields {
                            value = value.get(field)?;
                        }
                        Some(cost::weigh(value, MAX_COST))
                    },
                );
                if price.cost > MAX_COST {
                    return Err(self.error(format!(
                        "over its budget: evaluating it over these values could take {:.0} steps, more than {MAX_COST:.0} (a comprehension over a large list, nested or repeated); filter the data in a step first",
                        price.cost
                    )));
                }
                // A costly evaluation leaves its async worker to the runtime's
                // other tasks while it runs (the I/O of every other run).
                if price.cost > OFF_WORKER_COST && on_multi_thread_runtime() {
                    return tokio::task::block_in_place(|| self.run(program, scope));
                }
                self.run(program, scope)
            }
        }
    }

    fn run(&self, program: &cel::Program, scope: &Scope) -> Result<Json, EvalError> {
        let mut context = cel::Context::with_env(ENV.clone());
        for name in &self.variables {
            if let Some(value) = scope.get(name) {
                context.add_variable_from_value(name.as_str(), value.cel().clone());
            }
        }
        let value = program
            .execute(&context)
            .map_err(|e| self.error(e.to_string()))?;
        let json = value
            .json()
            .map_err(|e| self.error(format!("the result is not JSON: {e}")))?;
        // The result goes where a step's output goes (journal, next input),
        // so it obeys the same rules.
        let json = Json::from_value(json);
        if json.text().len() > MAX_RESULT {
            return Err(self.error(format!(
                "its result is {} bytes of JSON, more than {MAX_RESULT}",
                json.text().len()
            )));
        }
        json.check_depth().map_err(|e| self.error(e))?;
        Ok(json)
    }

    /// Evaluates a condition: the result must be a boolean.
    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, EvalError> {
        let json = self.eval(scope)?;
        json.value()
            .as_bool()
            .ok_or_else(|| self.error(format!("a condition must be true or false, not {json}")))
    }

    fn eval_path(&self, path: &[String], scope: &Scope) -> Result<Json, EvalError> {
        let root = scope
            .get(&path[0])
            .ok_or_else(|| self.error(format!("Undeclared reference to '{}'", path[0])))?;
        if path.len() == 1 {
            return Ok(root.clone());
        }
        let mut value = root.value();
        for field in &path[1..] {
            value = match value {
                serde_json::Value::Object(map) => map
                    .get(field)
                    .ok_or_else(|| self.error(format!("No such key: {field}")))?,
                other => {
                    return Err(self.error(format!(
                        "cannot select field '{field}' of {}",
                        type_name(other)
                    )));
                }
            };
        }
        Ok(Json::from_value(value.clone()))
    }

    fn error(&self, message: String) -> EvalError {
        EvalError {
            expression: self.source.clone(),
            message,
        }
    }
}

fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

/// Collects the names `expr` reads from its scope: identifiers that no
/// enclosing comprehension (`map`, `filter`, `all`, ...) binds.
fn free_variables(
    expr: &cel::IdedExpr,
    bound: &mut Vec<String>,
    out: &mut std::collections::BTreeSet<String>,
) {
    use cel::common::ast::Expr as E;
    match &expr.expr {
        E::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                out.insert(name.clone());
            }
        }
        E::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        E::Comprehension(comp) => {
            free_variables(&comp.iter_range, bound, out);
            free_variables(&comp.accu_init, bound, out);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            bound.extend(comp.iter_var2.clone());
            bound.push(comp.accu_var.clone());
            for part in [&comp.loop_cond, &comp.loop_step, &comp.result] {
                free_variables(part, bound, out);
            }
            bound.truncate(depth);
        }
        E::List(list) => list
            .elements
            .iter()
            .for_each(|e| free_variables(e, bound, out)),
        E::Map(map) => entry_values(&map.entries)
            .into_iter()
            .for_each(|e| free_variables(e, bound, out)),
        E::Struct(st) => entry_values(&st.entries)
            .into_iter()
            .for_each(|e| free_variables(e, bound, out)),
        E::Select(select) => free_variables(&select.operand, bound, out),
        E::Literal(_) | E::Unspecified => {}
    }
}

/// The expressions inside map or struct literal entries.
fn entry_values(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&cel::IdedExpr> {
    use cel::common::ast::EntryExpr;
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::StructField(field) => vec![&field.value],
            EntryExpr::MapEntry(map_entry) => vec![&map_entry.key, &map_entry.value],
        })
        .collect()
}

/// `a.b.c` (identifiers only, no CEL keywords) as its parts.
fn simple_path(source: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = source.trim().split('.').map(str::to_string).collect();
    let is_ident = |s: &str| {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !matches!(s, "true" | "false" | "null" | "in")
    };
    parts.iter().all(|p| is_ident(p)).then_some(parts)
}

/// A (line, column) from the CEL parser as a byte offset into `source`.
fn offset_of(source: &str, (line, column): (isize, isize)) -> Option<usize> {
    if line < 1 || column < 1 {
        return None;
    }
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line as usize - 1)
        .map(str::len)
        .sum();
    Some((line_start + column as usize - 1).min(source.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut scope = Scope::with_input(Json::from_value(json!({"name": "Acme", "n": 2})));
        scope.bind(
            "brand",
            Json::from_value(json!({"id": "b1", "name": "Acme"})),
        );
        scope
    }

    #[test]
    fn paths_resolve_without_cel_and_share_the_document() {
        let scope = scope();
        let expr = Expr::compile("brand").unwrap();
        assert!(matches!(expr.kind, Kind::Path(_)));
        assert!(expr.eval(&scope).unwrap().same(scope.get("brand").unwrap()));
        assert_eq!(
            Expr::compile("brand.id").unwrap().eval(&scope).unwrap(),
            json!("b1").into()
        );
        let missing = Expr::compile("brand.logo")
            .unwrap()
            .eval(&scope)
            .unwrap_err();
        assert!(missing.message.contains("logo"), "{missing}");
    }

    #[test]
    fn cel_maps_and_conditions() {
        let scope = scope();
        let expr = Expr::compile("{'id': brand.id, 'n': input.n + 1}").unwrap();
        assert_eq!(
            expr.eval(&scope).unwrap(),
            json!({"id": "b1", "n": 3}).into()
        );
        assert!(
            Expr::compile("!has(brand.logo_url)")
                .unwrap()
                .eval_bool(&scope)
                .unwrap()
        );
        assert!(
            !Expr::compile("size(brand.name) < 2")
                .unwrap()
                .eval_bool(&scope)
                .unwrap()
        );
        let not_bool = Expr::compile("brand.name + ''").unwrap().eval_bool(&scope);
        assert!(not_bool.unwrap_err().message.contains("true or false"));
    }

    #[test]
    fn variables_are_reported_for_validation() {
        let expr = Expr::compile("{'a': brand.id, 'b': input.x}").unwrap();
        assert_eq!(expr.variables(), ["brand", "input"]);
    }

    #[test]
    fn comprehension_variables_are_not_free() {
        let expr = Expr::compile("input.items.map(x, {'id': x.id, 'b': brand.id})").unwrap();
        assert_eq!(expr.variables(), ["brand", "input"]);
        let scope = {
            let mut s =
                Scope::with_input(Json::from_value(json!({"items": [{"id": 1}, {"id": 2}]})));
            s.bind("brand", Json::from_value(json!({"id": "b"})));
            s
        };
        assert_eq!(
            expr.eval(&scope).unwrap(),
            json!([{"id": 1, "b": "b"}, {"id": 2, "b": "b"}]).into()
        );
    }

    #[test]
    fn syntax_errors_have_an_offset() {
        let err = Expr::compile("brand.id +").unwrap_err();
        assert!(err.offset.is_some(), "{err:?}");
    }

    #[test]
    fn null_comparison_works_for_skipped_names() {
        let mut scope = scope();
        scope.bind("logo", Json::null());
        let expr = Expr::compile("logo == null ? brand : logo").unwrap();
        assert_eq!(
            expr.eval(&scope).unwrap(),
            json!({"id": "b1", "name": "Acme"}).into()
        );
    }
}

#[cfg(test)]
mod limits {
    use super::*;
    use serde_json::json;

    /// Runs `f` on a thread with a tokio worker's stack (2 MiB), where
    /// `host serve` evaluates expressions.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .expect("no stack overflow")
    }

    #[test]
    fn long_chains_are_refused_at_compile_time_not_overflowing_the_stack() {
        let sum = vec!["1"; 20_000].join("+");
        let err = on_worker_stack(move || Expr::compile(&sum).unwrap_err());
        assert!(err.message.contains("bytes long"), "{err}");
        // The longest accepted text, as deep as it can be made.
        let deep = vec!["1"; MAX_SOURCE / 2].join("+");
        let err = on_worker_stack(move || Expr::compile(&deep).unwrap_err());
        assert!(err.message.contains("nests deeper"), "{err}");
        let calls = format!("{}x{}", "size(".repeat(2000), ")".repeat(2000));
        let err = on_worker_stack(move || Expr::compile(&calls).unwrap_err());
        assert!(!err.message.is_empty());
        let selects = format!("x{}", ".a".repeat(4000));
        on_worker_stack(move || Expr::compile(&format!("{selects} + 1")).unwrap_err());
        // A shallow expression with many terms is fine.
        let flat = format!("[{}]", vec!["1"; 1000].join(","));
        let value = on_worker_stack(move || {
            Expr::compile(&flat)
                .unwrap()
                .eval(&Scope::default())
                .unwrap()
        });
        assert_eq!(value.value().as_array().unwrap().len(), 1000);
    }

    #[test]
    fn a_quadratic_expression_over_a_large_input_is_refused_before_it_runs() {
        let expr = Expr::compile("input.xs.map(a, input.xs.map(b, a + b))").unwrap();
        let small = Scope::with_input(Json::from_value(json!({"xs": [1, 2, 3]})));
        assert_eq!(expr.eval(&small).unwrap().value()[0], json!([2, 3, 4]));
        let xs: Vec<u32> = (0..10_000).collect();
        let large = Scope::with_input(Json::from_value(json!({ "xs": xs })));
        let started = std::time::Instant::now();
        let err = expr.eval(&large).unwrap_err();
        assert!(err.message.contains("over its budget"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The same list mapped once is within budget.
        let linear = Expr::compile("input.xs.map(a, a * 2)").unwrap();
        assert_eq!(
            linear
                .eval(&large)
                .unwrap()
                .value()
                .as_array()
                .unwrap()
                .len(),
            10_000
        );
    }
}

#[cfg(test)]
mod results {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_result_too_deep_to_journal_is_an_error() {
        let mut deep = json!(1);
        for _ in 0..98 {
            deep = json!([deep]);
        }
        let scope = Scope::with_input(Json::from_value(json!({ "d": deep })));
        assert!(Expr::compile("[input.d]").unwrap().eval(&scope).is_ok());
        let err = Expr::compile("[[[input.d]]]")
            .unwrap()
            .eval(&scope)
            .unwrap_err();
        assert!(err.message.contains("deeper than"), "{err}");
    }
}

#[cfg(test)]
mod priced {
    use super::*;
    use serde_json::json;

    fn refused(source: &str, input: serde_json::Value) {
        let scope = Scope::with_input(Json::from_value(input));
        let err = Expr::compile(source).unwrap().eval(&scope).unwrap_err();
        assert!(err.message.contains("over its budget"), "{source}: {err}");
    }

    /// Found in review: an optional field read (`input.?xs`) hid a list's
    /// length, and copies and deep comparisons were charged by length alone.
    #[test]
    fn optional_reads_copies_and_deep_comparisons_are_priced() {
        let zeros = vec![0; 100_000];
        refused(
            "input.?xs.orValue([]).map(a, input.?xs.orValue([]).exists(b, b == a))",
            json!({ "xs": zeros }),
        );
        let xs = vec![0; 4000];
        refused(
            "input.xs.map(x, input.s)",
            json!({ "xs": xs, "s": "x".repeat(1 << 20) }),
        );
        let ys: Vec<Vec<u32>> = (0..1000)
            .map(|i| (0..1000).map(|j| i * j).collect())
            .collect();
        let xs: Vec<Vec<u32>> = (0..500).map(|i| vec![i; 1000]).collect();
        refused(
            "input.xs.filter(x, x in input.ys)",
            json!({ "xs": xs, "ys": ys }),
        );
    }

    #[test]
    fn everyday_mappings_over_thousands_of_items_run() {
        let items: Vec<_> = (0..10_000)
            .map(|i| json!({"id": format!("item-{i}"), "price": i, "qty": 2}))
            .collect();
        let scope = Scope::with_input(Json::from_value(
            json!({ "items": items, "meta": {"shop": "s1"} }),
        ));
        for source in [
            "input.items.map(i, i.price * i.qty)",
            "input.items.filter(i, i.qty > 1).map(i, {'id': i.id, 'shop': input.meta.shop})",
            "input.items.exists(i, i.id == 'item-9999')",
        ] {
            let value = Expr::compile(source).unwrap().eval(&scope);
            assert!(value.is_ok(), "{source}: {value:?}");
        }
    }
}
