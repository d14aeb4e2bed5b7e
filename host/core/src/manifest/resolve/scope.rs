//! The scope of names: what `as` binds, and the expressions that may read
//! only names bound before them.

use super::*;

impl Resolver<'_> {
    pub(super) fn bind(
        &mut self,
        file: &File,
        bind: &Spanned<String>,
        names: &mut Names,
    ) -> Option<String> {
        let name = bind.get_ref();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                file,
                bind.span(),
                format!("'{name}' cannot be used as a name in expressions"),
            );
            self.add_help(
                "use letters, digits and '_' (no '-'), starting with a letter; e.g. as = \"brand\"",
            );
            return None;
        }
        if let Some(line) = names.bound.get(name) {
            let message = if name == "input" {
                "'input' is the workflow input and cannot be rebound".to_string()
            } else {
                format!("'{name}' is already bound (line {line})")
            };
            self.error(file, bind.span(), message);
            self.add_help("pick another name");
            return None;
        }
        names
            .bound
            .insert(name.clone(), file.source.line_of(bind.span().start));
        Some(name.clone())
    }

    /// Compiles an expression and checks that it only reads names bound before it.
    pub(super) fn expression(
        &mut self,
        file: &File,
        text: &Spanned<String>,
        names: &Names,
    ) -> Option<Expr> {
        // The span includes the TOML quotes; a CEL offset counts from after them
        // (three of them for a multi-line string).
        let quote = if file.source.text[text.span()].starts_with("\"\"\"") {
            3
        } else {
            1
        };
        let inner_start = text.span().start + quote;
        let expr = match Expr::compile(text.get_ref()) {
            Ok(expr) => expr,
            Err(e) => {
                let at = e
                    .offset
                    .map_or(text.span(), |o| inner_start + o..inner_start + o + 1);
                self.error(file, at, format!("invalid expression: {}", e.message));
                self.add_help("expressions are CEL, e.g. \"input.brand\", \"{'id': brand.id}\" or \"!has(brand.logo_url)\"");
                return None;
            }
        };
        let mut ok = true;
        for variable in expr.variables() {
            if names.bound.contains_key(variable) {
                continue;
            }
            ok = false;
            let position = text
                .get_ref()
                .find(variable.as_str())
                .map_or(text.span(), |o| {
                    inner_start + o..inner_start + o + variable.len()
                });
            self.error(
                file,
                position,
                format!("unknown name '{variable}' in this expression"),
            )
            .label("not bound here");
            let in_scope: Vec<&str> = names.bound.keys().map(String::as_str).collect();
            let hint = did_you_mean(variable, in_scope.iter().copied())
                .map(|near| format!("did you mean '{near}'? "))
                .unwrap_or_default();
            self.add_help(format!(
                "{hint}names bound at this point: {} (an entry's `as` name is visible to the entries after it)",
                in_scope.join(", ")
            ));
        }
        ok.then_some(expr)
    }
}
