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
/// host's interpreter at 30–160 ns a step, at most about a third of a second
/// of CPU (a `map` over some 100,000 elements is about 1.5 million).
pub const MAX_COST: f64 = 2_000_000.0;

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
}

impl Price {
    fn length(&self) -> f64 {
        self.shape.first().copied().unwrap_or(0.0)
    }
}

/// Prices `expr` where `shape_of(name)` is the shape of the value bound to a
/// free name.
pub fn price(expr: &cel::IdedExpr, shape_of: &dyn Fn(&str) -> Shape) -> Price {
    Pricer {
        shape_of,
        locals: Vec::new(),
    }
    .price(expr)
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
    /// Names bound by enclosing comprehensions, with their shapes.
    locals: Vec<(String, Shape)>,
}

impl Pricer<'_> {
    fn price(&mut self, expr: &cel::IdedExpr) -> Price {
        match &expr.expr {
            E::Ident(name) => Price {
                cost: 1.0,
                shape: self.shape_of_name(name),
            },
            E::Literal(literal) => Price {
                cost: 1.0,
                shape: vec![match literal {
                    LiteralValue::String(s) => s.inner().len() as f64,
                    LiteralValue::Bytes(b) => b.inner().len() as f64,
                    _ => 0.0,
                }],
            },
            E::Select(select) => {
                let operand = self.price(&select.operand);
                Price {
                    cost: operand.cost + 1.0,
                    shape: below(&operand.shape),
                }
            }
            E::Call(call) => {
                let parts: Vec<Price> = call
                    .target
                    .iter()
                    .map(|t| &**t)
                    .chain(&call.args)
                    .map(|part| self.price(part))
                    .collect();
                let cost = parts.iter().map(|p| p.cost + p.length()).sum::<f64>() + 1.0;
                let name = call.func_name.as_str();
                let shape = if SELECTORS.contains(&name) && !parts.is_empty() {
                    below(&parts[0].shape)
                } else if SCALAR.contains(&name) {
                    vec![0.0]
                } else if name == "_?_:_" && parts.len() == 3 {
                    combine(&parts[1].shape, &parts[2].shape, f64::max)
                } else if UNWRAP.contains(&name) {
                    // One of its arguments, as it is.
                    parts
                        .iter()
                        .fold(Shape::new(), |acc, p| combine(&acc, &p.shape, f64::max))
                } else if name == "_+_" {
                    // Concatenation: the lengths add up, level by level.
                    let mut shape = parts
                        .iter()
                        .fold(Shape::new(), |acc, p| combine(&acc, &p.shape, |a, b| a + b));
                    if shape.is_empty() {
                        shape.push(0.0);
                    }
                    shape[0] += 1.0;
                    shape
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
                    shape
                };
                Price { cost, shape }
            }
            E::List(_) | E::Map(_) | E::Struct(_) => {
                let parts: Vec<Price> = children(expr).into_iter().map(|e| self.price(e)).collect();
                let mut shape = vec![parts.len() as f64];
                for part in &parts {
                    let deeper = combine(&below(&shape), &part.shape, f64::max);
                    shape.truncate(1);
                    shape.extend(deeper);
                }
                Price {
                    cost: parts.iter().map(|p| p.cost).sum::<f64>() + parts.len() as f64 + 1.0,
                    shape,
                }
            }
            E::Comprehension(c) => {
                let range = self.price(&c.iter_range);
                let init = self.price(&c.accu_init);
                let element = below(&range.shape);
                let depth = self.locals.len();
                self.locals.push((c.iter_var.clone(), element.clone()));
                if let Some(second) = &c.iter_var2 {
                    self.locals.push((second.clone(), element));
                }
                // One iteration, with the accumulator as it starts: appends to
                // it happen in place, so its growth is charged once, below.
                self.locals.push((c.accu_var.clone(), init.shape.clone()));
                let cond = self.price(&c.loop_cond);
                let step = self.price(&c.loop_step);
                let mut grown = combine(&init.shape, &step.shape, f64::max);
                if let Some(length) = grown.first_mut() {
                    *length =
                        init.length() + range.length() * (step.length() - init.length()).max(0.0);
                }
                self.locals.truncate(depth);
                self.locals.push((c.accu_var.clone(), grown));
                let result = self.price(&c.result);
                self.locals.truncate(depth);
                Price {
                    cost: range.cost
                        + init.cost
                        + range.length() * (cond.cost + step.cost)
                        + result.cost,
                    shape: result.shape,
                }
            }
            E::Unspecified => Price {
                cost: 1.0,
                shape: vec![0.0],
            },
        }
    }

    fn shape_of_name(&self, name: &str) -> Shape {
        match self.locals.iter().rev().find(|(local, _)| local == name) {
            Some((_, shape)) => shape.clone(),
            None => (self.shape_of)(name),
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
