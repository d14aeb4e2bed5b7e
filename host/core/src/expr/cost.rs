//! The work budget of an expression: an upper bound on what evaluating it can
//! cost, computed from the expression and the sizes of the values it reads,
//! before it runs. It may not evaluate anything.
//!
//! CEL always terminates, but not always soon: `xs.map(a, xs.map(b, a + b))`
//! over a caller's 10,000-element list is 10⁸ steps, and the interpreter
//! cannot be interrupted. So every evaluation is priced first. A value's
//! *shape* bounds, level by level, the longest list, map or string in it
//! (`[3, 5]` for three lists of at most five numbers); a bound name's shape
//! is read off its JSON, a field or element of a value has the shape's next
//! level. The price follows the evaluator: a literal or a name costs 1; a
//! function costs 1 plus the lengths of its arguments (string and list
//! functions are linear in them), and its result is at most their sum
//! (concatenation is the worst case); a comprehension (`map`, `filter`,
//! `all`, `exists`, `exists_one`) costs its range's length times its body.
//! The list a macro appends to is appended in place by the interpreter, so
//! its growth is not charged per iteration.

use cel::common::ast::{EntryExpr, Expr as E, LiteralValue};

/// The most work an expression may do over one scope: measured on this
/// host's interpreter at 6–40 ns a step, at most about a third of a second
/// of CPU (a `map` over 100,000 small objects is about 12 million steps).
pub const MAX_COST: f64 = 10_000_000.0;

/// The deepest an expression's syntax tree may nest (the evaluator recurses
/// once per level, and a worker thread's stack is 2 MiB).
pub const MAX_NESTING: usize = 64;

/// Level by level, the longest list, map or string a value can hold.
pub type Shape = Vec<f64>;

/// The price of evaluating an expression, with the shape of its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Steps, an upper bound.
    pub cost: f64,
    /// The result's shape.
    pub shape: Shape,
    /// What copying the result costs (see [`weight_of`]).
    pub weight: f64,
    /// The most copying one of its elements or fields costs.
    pub child: f64,
}

impl Price {
    fn length(&self) -> f64 {
        self.shape.first().copied().unwrap_or(0.0)
    }
}

/// Prices `expr` where `shape_of(name)` is the shape of the value bound to a
/// free name (copies weighed by shapes alone).
#[cfg(test)]
pub fn price(expr: &cel::IdedExpr, shape_of: &dyn Fn(&str) -> Shape) -> Price {
    price_with_copies(expr, shape_of, &|_, _| None)
}

/// [`price`], with `weigh(name, fields)` the weight (see [`weight_of`]) of
/// the value at that field path of a free name and the largest weight of one
/// of its elements or fields, when it exists: what copies of them cost.
pub fn price_with_copies(
    expr: &cel::IdedExpr,
    shape_of: &dyn Fn(&str) -> Shape,
    weigh: &dyn Fn(&str, &[&str]) -> Option<Exact>,
) -> Price {
    Pricer {
        shape_of,
        weigh,
        locals: Vec::new(),
    }
    .price(expr)
}

/// What copying one node costs, in steps: copying a map or a list allocates,
/// measured here at about four times an arithmetic step.
const NODE: f64 = 4.0;

/// What copying or comparing `value` costs: [`NODE`] per node, and one per 64
/// bytes of a string (the interpreter deep-copies a value it puts in a list
/// or map, binds to a loop variable or passes to a function). The walk
/// stops past `limit`.
pub fn weight_of(value: &serde_json::Value, limit: f64) -> f64 {
    let mut weight = 0.0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        weight += NODE;
        match value {
            serde_json::Value::String(s) => weight += (s.len() / 64) as f64,
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    weight += (key.len() / 64) as f64;
                    stack.push(item);
                }
            }
            _ => {}
        }
        if weight > limit {
            break;
        }
    }
    weight
}

/// The weight of `value` and the largest weight of one of its elements or
/// fields (each walk stops past `limit`).
pub fn weigh(value: &serde_json::Value, limit: f64) -> Exact {
    let children: Vec<f64> = match value {
        serde_json::Value::Array(items) => items.iter().map(|v| weight_of(v, limit)).collect(),
        serde_json::Value::Object(map) => map.values().map(|v| weight_of(v, limit)).collect(),
        serde_json::Value::String(s) => {
            return Exact {
                weight: weight_of(value, limit),
                child: 0.0,
                length: s.len() as f64,
            };
        }
        other => {
            return Exact {
                weight: weight_of(other, limit),
                child: 0.0,
                length: 0.0,
            };
        }
    };
    Exact {
        weight: 1.0 + children.iter().sum::<f64>(),
        child: children.iter().copied().fold(0.0, f64::max),
        length: children.len() as f64,
    }
}

/// What is known exactly of a value an expression reads by its path.
#[derive(Debug, Clone, Copy)]
pub struct Exact {
    /// Its weight.
    pub weight: f64,
    /// The largest weight of one of its elements or fields.
    pub child: f64,
    /// Its length (list, map or string).
    pub length: f64,
}

impl Exact {
    /// Its weights, with its exact length put in `shape`.
    fn apply(self, shape: &mut Shape) -> (f64, f64) {
        match shape.first_mut() {
            Some(length) => *length = self.length,
            None => shape.push(self.length),
        }
        (self.weight, self.child)
    }
}

/// The weights of an element or field of `whole` whose shape is `shape`:
/// at most the whole's largest child, and at most what the shape allows.
fn part_of(whole: &Price, shape: &[f64]) -> (f64, f64) {
    (
        whole.child.min(shape_weight(shape)),
        whole.child.min(shape_weight(&below(shape))),
    )
}

/// A bound on a copy's cost from a shape alone: its nodes, level by level
/// (lists of lists multiply).
fn shape_weight(shape: &[f64]) -> f64 {
    let mut nodes = NODE;
    let mut level = 1.0;
    for &length in shape {
        if length <= 0.0 {
            break;
        }
        level *= length;
        nodes += NODE * level;
    }
    nodes
}

/// Functions whose result is a number or a boolean whatever their arguments.
const SCALAR: &[&str] = &[
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_&&_",
    "_||_",
    "!_",
    "@in",
    "@not_strictly_false",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "-_",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "bool",
    "has",
];

/// Functions that read a field or an element: their result is one level
/// below their first argument (`a[i]`, `a.?f`, `a[?i]`; found in review:
/// an optional read used to hide a list's length).
const SELECTORS: &[&str] = &["_[_]", "_?._", "_[?_]"];

/// Functions that return one of their arguments (an optional's value).
const UNWRAP: &[&str] = &[
    "orValue",
    "or",
    "value",
    "optional.of",
    "optional.ofNonZeroValue",
];

fn below(shape: &[f64]) -> Shape {
    shape.get(1..).unwrap_or_default().to_vec()
}

fn combine(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Shape {
    (0..a.len().max(b.len()))
        .map(|i| {
            f(
                a.get(i).copied().unwrap_or(0.0),
                b.get(i).copied().unwrap_or(0.0),
            )
        })
        .collect()
}

/// The depth of `expr`'s tree, counted up to `limit + 1` (so a degenerate
/// tree is not walked to its end).
pub fn nesting(expr: &cel::IdedExpr, limit: usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > limit {
            break;
        }
        for child in children(node) {
            stack.push((child, depth + 1));
        }
    }
    deepest
}

/// The direct sub-expressions of `expr`.
fn children(expr: &cel::IdedExpr) -> Vec<&cel::IdedExpr> {
    match &expr.expr {
        E::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        E::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        E::List(list) => list.elements.iter().collect(),
        E::Map(map) => entries(&map.entries),
        E::Struct(st) => entries(&st.entries),
        E::Select(select) => vec![&select.operand],
        E::Ident(_) | E::Literal(_) | E::Unspecified => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&cel::IdedExpr> {
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::StructField(field) => vec![&field.value],
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
        })
        .collect()
}

struct Pricer<'a> {
    shape_of: &'a dyn Fn(&str) -> Shape,
    weigh: &'a dyn Fn(&str, &[&str]) -> Option<Exact>,
    /// Names bound by enclosing comprehensions, with their shapes, weights
    /// and their elements' weights.
    locals: Vec<(String, Shape, f64, f64)>,
}

impl Pricer<'_> {
    fn price(&mut self, expr: &cel::IdedExpr) -> Price {
        match &expr.expr {
            E::Ident(name) => {
                let (shape, weight, child) = self.name(name);
                Price {
                    cost: 1.0,
                    shape,
                    weight,
                    child,
                }
            }
            E::Literal(literal) => {
                let length = match literal {
                    LiteralValue::String(s) => s.inner().len(),
                    LiteralValue::Bytes(b) => b.inner().len(),
                    _ => 0,
                };
                Price {
                    cost: 1.0,
                    shape: vec![length as f64],
                    weight: 1.0 + (length / 64) as f64,
                    child: 0.0,
                }
            }
            E::Select(select) => {
                let operand = self.price(&select.operand);
                let mut shape = below(&operand.shape);
                let (weight, child) = match self.exact(expr) {
                    Some(exact) => exact.apply(&mut shape),
                    None => part_of(&operand, &shape),
                };
                Price {
                    cost: operand.cost + 1.0,
                    shape,
                    weight,
                    child,
                }
            }
            E::Call(call) => {
                let args: Vec<&cel::IdedExpr> =
                    call.target.iter().map(|t| &**t).chain(&call.args).collect();
                let parts: Vec<Price> = args.iter().map(|part| self.price(part)).collect();
                let name = call.func_name.as_str();
                // A function reads, compares or copies its arguments whole;
                // logic picks one of them and copies nothing.
                let copies = !matches!(name, "_?_:_" | "_&&_" | "_||_" | "!_");
                let cost = parts
                    .iter()
                    .map(|p| p.cost + if copies { p.weight } else { 0.0 })
                    .sum::<f64>()
                    + 1.0;
                let sum = |f: fn(&Price) -> f64| parts.iter().map(f).sum::<f64>();
                let most = |f: fn(&Price) -> f64| parts.iter().map(f).fold(0.0, f64::max);
                let (shape, weight, child) = if SELECTORS.contains(&name) && !parts.is_empty() {
                    let mut shape = below(&parts[0].shape);
                    let exact = if name == "_[_]" {
                        None
                    } else {
                        self.exact(expr)
                    };
                    let (weight, child) = match exact {
                        Some(exact) => exact.apply(&mut shape),
                        None => part_of(&parts[0], &shape),
                    };
                    (shape, weight, child)
                } else if SCALAR.contains(&name) {
                    (vec![0.0], 1.0, 0.0)
                } else if name == "_?_:_" && parts.len() == 3 {
                    (
                        combine(&parts[1].shape, &parts[2].shape, f64::max),
                        parts[1].weight.max(parts[2].weight),
                        parts[1].child.max(parts[2].child),
                    )
                } else if UNWRAP.contains(&name) {
                    // One of its arguments, as it is.
                    let shape = parts
                        .iter()
                        .fold(Shape::new(), |acc, p| combine(&acc, &p.shape, f64::max));
                    (shape, most(|p| p.weight), most(|p| p.child))
                } else if name == "_+_" {
                    // Concatenation: the lengths add up, level by level.
                    let shape = parts
                        .iter()
                        .fold(Shape::new(), |acc, p| combine(&acc, &p.shape, |a, b| a + b));
                    (shape, sum(|p| p.weight), most(|p| p.child))
                } else {
                    // Anything else (`string()`, a conversion, ...): as long
                    // as everything it was given, at any level.
                    let mut shape = parts
                        .iter()
                        .fold(Shape::new(), |acc, p| combine(&acc, &p.shape, |a, b| a + b));
                    let widest: f64 = parts
                        .iter()
                        .map(|p| p.shape.iter().copied().fold(0.0, f64::max))
                        .sum();
                    if shape.is_empty() {
                        shape.push(0.0);
                    }
                    shape[0] = shape[0].max(widest) + 1.0;
                    (shape, sum(|p| p.weight) + 1.0, most(|p| p.weight))
                };
                Price {
                    cost,
                    shape,
                    weight,
                    child,
                }
            }
            E::List(_) | E::Map(_) | E::Struct(_) => {
                let parts: Vec<Price> = children(expr).into_iter().map(|e| self.price(e)).collect();
                let mut shape = vec![parts.len() as f64];
                for part in &parts {
                    let deeper = combine(&below(&shape), &part.shape, f64::max);
                    shape.truncate(1);
                    shape.extend(deeper);
                }
                // Each part is copied into the new value.
                let copies: f64 = parts.iter().map(|p| p.weight).sum();
                Price {
                    cost: parts.iter().map(|p| p.cost).sum::<f64>() + copies + 1.0,
                    shape,
                    weight: 1.0 + copies,
                    child: parts.iter().map(|p| p.weight).fold(0.0, f64::max),
                }
            }
            E::Comprehension(c) => {
                let range = self.price(&c.iter_range);
                let init = self.price(&c.accu_init);
                let element = below(&range.shape);
                let (weight, child) = part_of(&range, &element);
                let depth = self.locals.len();
                self.locals
                    .push((c.iter_var.clone(), element.clone(), weight, child));
                if let Some(second) = &c.iter_var2 {
                    self.locals.push((second.clone(), element, weight, child));
                }
                // One iteration, with the accumulator as it starts: appends to
                // it happen in place, so its growth is charged once, below.
                self.locals.push((
                    c.accu_var.clone(),
                    init.shape.clone(),
                    init.weight,
                    init.child,
                ));
                let cond = self.price(&c.loop_cond);
                let step = self.price(&c.loop_step);
                let mut grown = combine(&init.shape, &step.shape, f64::max);
                if let Some(length) = grown.first_mut() {
                    *length =
                        init.length() + range.length() * (step.length() - init.length()).max(0.0);
                }
                let grown_weight =
                    init.weight + range.length() * (step.weight - init.weight).max(0.0);
                self.locals.truncate(depth);
                self.locals.push((
                    c.accu_var.clone(),
                    grown,
                    grown_weight,
                    init.child.max(step.child),
                ));
                let result = self.price(&c.result);
                self.locals.truncate(depth);
                // The loop variable is a copy of each element: all of them
                // together weigh no more than the range.
                let copies = (range.length() * range.child).min(range.weight);
                Price {
                    cost: range.cost
                        + init.cost
                        + copies
                        + range.length() * (cond.cost + step.cost)
                        + result.cost,
                    shape: result.shape,
                    weight: result.weight,
                    child: result.child,
                }
            }
            E::Unspecified => Price {
                cost: 1.0,
                shape: vec![0.0],
                weight: 1.0,
                child: 0.0,
            },
        }
    }

    /// The exact weights of a field path of a free name (`input.a.b`,
    /// `input.?a`), when it is one and the value exists.
    fn exact(&self, expr: &cel::IdedExpr) -> Option<Exact> {
        let mut fields = Vec::new();
        let mut node = expr;
        loop {
            match &node.expr {
                E::Select(select) if !select.test => {
                    fields.push(select.field.as_str());
                    node = &select.operand;
                }
                E::Call(call) if call.func_name == "_?._" && call.args.len() == 2 => {
                    let E::Literal(LiteralValue::String(field)) = &call.args[1].expr else {
                        return None;
                    };
                    fields.push(field.inner());
                    node = &call.args[0];
                }
                E::Ident(name) if !self.locals.iter().any(|(l, ..)| l == name) => {
                    fields.reverse();
                    return (self.weigh)(name, &fields);
                }
                _ => return None,
            }
        }
    }

    fn name(&self, name: &str) -> (Shape, f64, f64) {
        match self.locals.iter().rev().find(|(local, ..)| local == name) {
            Some((_, shape, weight, child)) => (shape.clone(), *weight, *child),
            None => {
                let mut shape = (self.shape_of)(name);
                let (weight, child) = match (self.weigh)(name, &[]) {
                    Some(exact) => exact.apply(&mut shape),
                    None => (shape_weight(&shape), shape_weight(&below(&shape))),
                };
                (shape, weight, child)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prices `source` where every name is a list of `size` lists of
    /// `size` numbers.
    fn price_of(source: &str, size: f64) -> Price {
        let program = cel::Env::stdlib().compile(source).unwrap();
        price(program.expression(), &|_| vec![size, size, 0.0])
    }

    #[test]
    fn a_map_is_linear_and_a_nested_map_quadratic_in_the_list() {
        let program = cel::Env::stdlib().compile("xs.map(x, x + 1)").unwrap();
        let linear = price(program.expression(), &|_| vec![10_000.0, 0.0]);
        assert!(
            linear.cost > 10_000.0 && linear.cost < MAX_COST / 10.0,
            "{linear:?}"
        );
        let quadratic = price_of("xs.map(a, xs.map(b, a + b))", 10_000.0);
        assert!(quadratic.cost > 100.0 * MAX_COST, "{quadratic:?}");
        let program = cel::Env::stdlib()
            .compile("xs.map(a, xs.map(b, a + b))")
            .unwrap();
        let small = price(program.expression(), &|_| vec![100.0, 0.0]);
        assert!(small.cost < MAX_COST, "{small:?}");
    }

    #[test]
    fn a_nested_map_over_the_elements_is_charged_by_the_widest_collection() {
        // 1,000 orders of 100 items: the inner range is an order's items.
        let program = cel::Env::stdlib()
            .compile("orders.map(o, o.items.map(i, i.price * 2))")
            .unwrap();
        let nested = price(program.expression(), &|_| {
            vec![1000.0, 1.0, 100.0, 1.0, 0.0]
        });
        assert!(nested.cost < MAX_COST, "{nested:?}");
        assert!(nested.cost > 100_000.0, "{nested:?}");
    }

    #[test]
    fn concatenation_grows_the_size() {
        let doubled = price_of("xs + xs", 10.0);
        assert!(doubled.shape[0] >= 20.0, "{doubled:?}");
        let filtered = price_of("xs.filter(x, size(x) > 1)", 10.0);
        assert!(
            filtered.shape[0] >= 10.0 && filtered.shape[0] < 100.0,
            "{filtered:?}"
        );
        let mapped = price_of("xs.map(x, x + x)", 10.0);
        assert!(
            mapped.shape[0] >= 10.0 && mapped.shape[1] >= 20.0,
            "{mapped:?}"
        );
    }

    #[test]
    fn nesting_is_counted_without_recursion() {
        let program = cel::Env::stdlib().compile("a + (b + (c + d))").unwrap();
        assert_eq!(nesting(program.expression(), 100), 4);
        assert_eq!(nesting(program.expression(), 2), 3);
    }
}
