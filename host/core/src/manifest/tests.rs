//! Manifest validation: good manifests resolve; bad ones name the place and the fix.

use std::path::PathBuf;

use std::sync::Arc;

use super::*;
use crate::app::{App, Grant, GrantEntry, GrantParser, GrantProblems, GrantRegistry};
use crate::saga::Entry;

/// Grant parsers standing in for the host's capabilities: the loader's side of
/// `grants` is tested here; each capability's own parser is tested in the host.
#[derive(Debug)]
struct Names(Vec<String>);

impl Grant for Names {
    fn to_toml(&self) -> String {
        format!("names = {:?}", self.0)
    }
}

struct NamesParser(&'static str);

impl GrantParser for NamesParser {
    fn key(&self) -> &'static str {
        self.0
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        let names: Vec<String> = entry.deserialize(problems)?;
        Some(Arc::new(Names(names)))
    }
}

#[derive(Debug)]
struct Flag;

impl Grant for Flag {
    fn to_toml(&self) -> String {
        "flag = true".into()
    }
}

struct FlagParser(&'static str);

impl GrantParser for FlagParser {
    fn key(&self) -> &'static str {
        self.0
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        let on: bool = entry.deserialize(problems)?;
        on.then(|| Arc::new(Flag) as Arc<dyn Grant>)
    }
}

fn options() -> LoadOptions {
    LoadOptions::new(GrantRegistry::new(vec![
        Arc::new(NamesParser("entities")),
        Arc::new(FlagParser("events")),
        Arc::new(NamesParser("config")),
    ]))
}

/// Writes `text` as `main.toml` (plus `step.wasm` and extra files) in a temp dir.
fn write(text: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("step.wasm"), b"not checked here").unwrap();
    for (name, content) in extra {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("main.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn load_ok(text: &str) -> App {
    let (_dir, path) = write(text, &[]);
    load(&path, &options()).unwrap_or_else(|e| panic!("{}", e.render(false)))
}

/// The errors as `line:col: message` lines, and the full renderings.
fn errors(text: &str) -> (Vec<String>, String) {
    errors_with(text, &[])
}

fn errors_with(text: &str, extra: &[(&str, &str)]) -> (Vec<String>, String) {
    let (_dir, path) = write(text, extra);
    let errors = load(&path, &options()).expect_err("the manifest is invalid");
    let lines = errors
        .errors
        .iter()
        .map(|e| {
            let (line, col) = e.position.unwrap_or((0, 0));
            format!("{line}:{col}: {}", e.message)
        })
        .collect();
    (lines, errors.render(false))
}

const STEP: &str = "[steps.a]\ncomponent = \"step.wasm\"\n";

#[test]
fn a_complete_manifest_resolves() {
    let m = load_ok(
        r#"
[workflow]
name = "setup-brand"

[config]
default-logo-url = "https://example.com/logo.png"

[steps.a]
component = "step.wasm"
grants = { entities = ["brand"], events = true, config = ["default-logo-url"] }
retries = { max = 2, interval = "10ms", backoff = "exponential" }
timeout = "2s"
memory = "32MiB"

[steps.b]
component = "step.wasm"

[[flow]]
run = "a"
input = "input.brand"
as = "brand"

[[flow]]
parallel = [
  { run = "b", input = "brand.id", as = "left" },
  { run = "a", input = "brand.id", as = "right", timeout = "1s" },
]

[[flow]]
when = "!has(brand.logo_url)"
then = [{ transform = "{'id': brand.id}", as = "logo" }]

[output]
value = "{'brand': brand, 'left': left, 'right': right, 'logo': logo}"
"#,
    );
    assert_eq!(m.workflow.name, "setup-brand");
    assert_eq!(m.workflow.steps.len(), 2);
    assert_eq!(m.components[0].limits.memory_bytes, 32 << 20);
    assert!(m.components[0].grants.get::<Flag>("events").is_some());
    assert_eq!(m.workflow.steps[0].policy.retries.max, 2);
    let Entry::Parallel(branches) = &m.workflow.flow[1] else {
        panic!("parallel")
    };
    let Entry::Run(second) = &branches[1] else {
        panic!("run")
    };
    // The second call of `a` is named by its `as`, and keeps `a`'s retries but its own timeout.
    assert_eq!(second.node, "right");
    assert_eq!(second.policy.retries.max, 2);
    assert_eq!(
        second.policy.timeout,
        Some(std::time::Duration::from_secs(1))
    );
    let Entry::When { binds, .. } = &m.workflow.flow[2] else {
        panic!("when")
    };
    assert_eq!(binds, &["logo"]);
}

#[test]
fn unknown_keys_are_located_with_a_suggestion() {
    let (lines, rendered) =
        errors("[workflow]\nname = \"w\"\n\n[steps.a]\ncomponnt = \"step.wasm\"\n");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("5:1: unknown field `componnt`"),
        "{lines:?}"
    );
    assert!(rendered.contains("did you mean `component`?"), "{rendered}");
    assert!(rendered.contains("main.toml:5:1"), "{rendered}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let (lines, _) = errors("[workflow]\nname = \"w\n");
    assert!(lines[0].starts_with("2:"), "{lines:?}");
}

#[test]
fn an_unknown_step_suggests_the_declared_one() {
    let (lines, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"b\"\n"
    ));
    assert_eq!(lines, ["6:7: unknown step 'b'"]);
    assert!(rendered.contains("declared steps: a"), "{rendered}");
    let (_, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[steps.create-brand]\ncomponent = \"step.wasm\"\n[[flow]]\nrun = \"creat-brand\"\n"
    ));
    assert!(
        rendered.contains("did you mean 'create-brand'?"),
        "{rendered}"
    );
}

#[test]
fn expressions_are_compiled_and_scoped() {
    let (lines, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"a\"\ninput = \"brnd.id\"\n[[flow]]\ntransform = \"input.x +\"\nas = \"t\"\n"
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "7:10: unknown name 'brnd' in this expression");
    assert!(
        lines[1].starts_with("9:") && lines[1].contains("invalid expression"),
        "{lines:?}"
    );
    assert!(
        rendered.contains("names bound at this point: input"),
        "{rendered}"
    );
}

#[test]
fn parallel_siblings_do_not_see_each_other() {
    let (lines, _) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nparallel = [{{ run = \"a\", as = \"x\" }}, {{ transform = \"x\", as = \"y\" }}]\n"
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("unknown name 'x'"), "{lines:?}");
}

#[test]
fn a_missing_component_names_the_build_command() {
    let (lines, rendered) = errors(
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"missing.wasm\"\nbuild = \"make a\"\n[[flow]]\nrun = \"a\"\n",
    );
    assert!(
        lines[0].starts_with("4:13: component file not found"),
        "{lines:?}"
    );
    assert!(rendered.contains("host run --build"), "{rendered}");
    assert!(rendered.contains("make a"), "{rendered}");
}

#[test]
fn bad_options_say_what_is_expected() {
    let (lines, rendered) = errors(
        "[workflow]\nname = \"w\"\n[steps.a]\ncomponent = \"step.wasm\"\ntimeout = \"soon\"\nmemory = \"lots\"\nretries = { max = 1, backoff = \"linear\" }\n[[flow]]\nrun = \"a\"\n",
    );
    // (The fourth problem of this test, a config grant, is in the host's
    // capabilities::config tests: that parser is the host's.)
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(rendered.contains("write a duration like"), "{rendered}");
    assert!(rendered.contains("write a size like"), "{rendered}");
    assert!(
        rendered.contains("\"fixed\" or \"exponential\""),
        "{rendered}"
    );
}

#[test]
fn entries_must_be_one_thing() {
    let (lines, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"a\"\nwhen = \"true\"\n[[flow]]\ninput = \"input\"\n"
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("both `run` and `when`"), "{lines:?}");
    assert!(rendered.contains("then = [{ run"), "{rendered}");
    assert!(lines[1].contains("does not say what to do"), "{lines:?}");
}

#[test]
fn a_step_run_twice_needs_an_as_name() {
    let (lines, _) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"a\"\n"
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("runs more than once"), "{lines:?}");
}

#[test]
fn names_cannot_be_rebound() {
    let (lines, _) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"a\"\nas = \"x\"\n[[flow]]\ntransform = \"1\"\nas = \"x\"\n[[flow]]\ntransform = \"1\"\nas = \"input\"\n"
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("'x' is already bound (line 7)"),
        "{lines:?}"
    );
    assert!(lines[1].contains("cannot be rebound"), "{lines:?}");
}

#[test]
fn nested_workflows_are_flattened_and_cycles_rejected() {
    let child = format!(
        "[workflow]\nname = \"child\"\n{STEP}[[flow]]\nrun = \"a\"\nas = \"r\"\n[output]\nvalue = \"r\"\n"
    );
    let (_dir, path) = write(
        &format!(
            "[workflow]\nname = \"parent\"\n{STEP}[[flow]]\nrun = \"a\"\n[[flow]]\nworkflow = \"child.toml\"\nas = \"c\"\n"
        ),
        &[("child.toml", &child)],
    );
    let m = load(&path, &options()).unwrap_or_else(|e| panic!("{}", e.render(false)));
    assert_eq!(m.workflow.steps.len(), 2);
    assert_eq!(m.components[1].step, "c/a");
    assert_eq!(m.files().count(), 2);

    let loop_a = "[workflow]\nname = \"a\"\n[[flow]]\nworkflow = \"b.toml\"\n";
    let loop_b = "[workflow]\nname = \"b\"\n[[flow]]\nworkflow = \"a.toml\"\n";
    let (_dir, _) = write("", &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), loop_a).unwrap();
    std::fs::write(dir.path().join("b.toml"), loop_b).unwrap();
    let errors = load(&dir.path().join("a.toml"), &options()).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("nested workflows form a cycle: a.toml → b.toml → a.toml"),
        "{text}"
    );
    assert!(text.contains("b.toml:4:12"), "{text}");
}

#[test]
fn a_grant_line_is_remembered_for_denials() {
    let m = load_ok(
        "[workflow]\nname = \"w\"\n\n[steps.a]\ncomponent = \"step.wasm\"\n\n[steps.b]\ncomponent = \"step.wasm\"\ngrants = { entities = [\"brand\"] }\n[[flow]]\nrun = \"a\"\n[[flow]]\nrun = \"b\"\n",
    );
    assert_eq!(m.components[0].grants.place.line, 4);
    assert_eq!(m.components[1].grants.place.line, 9);
}

#[test]
fn failure_policies_and_their_targets_are_checked() {
    let (lines, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nrun = \"a\"\non-permanent-failure = \"skip-to:later\"\n[[flow]]\ntransform = \"1\"\nas = \"before\"\n[steps.b]\ncomponent = \"step.wasm\"\non-permanent-failure = \"explode\"\n"
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        rendered.contains("`skip-to:later` names no later entry"),
        "{rendered}"
    );
    assert!(
        rendered.contains("the `as` names of later entries: before"),
        "{rendered}"
    );
    assert!(
        rendered.contains("'explode' is not a failure policy"),
        "{rendered}"
    );
}

#[test]
fn for_each_query_hooks_and_subscribers_are_checked() {
    let (lines, rendered) = errors(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[flow]]\nfor-each = \"input.items\"\n[[flow]]\nquery = {{ entity = \"brand\" }}\n[[flow]]\nrun = \"a\"\nconcurrency = 2\n[[hooks.unused]]\ncomponent = \"step.wasm\"\n[[subscribers]]\ncommand = \"true\"\ncomponent = \"step.wasm\"\n"
    ));
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(rendered.contains("a `for-each` needs `run`"), "{rendered}");
    assert!(rendered.contains("a `query` needs `as`"), "{rendered}");
    assert!(
        rendered.contains("`concurrency` belongs to a `for-each` entry"),
        "{rendered}"
    );
    assert!(
        rendered.contains("handlers are declared for hook 'unused', but the flow has no such hook"),
        "{rendered}"
    );
    assert!(
        rendered.contains("a subscriber needs exactly one of `component` or `command`"),
        "{rendered}"
    );
}

#[test]
fn for_each_inputs_see_item_and_index_and_hooks_get_their_handlers() {
    let m = load_ok(&format!(
        "[workflow]\nname = \"w\"\n{STEP}[[hooks.created]]\nname = \"notify\"\ncomponent = \"step.wasm\"\n[[hooks.created]]\ncomponent = \"step.wasm\"\n[[flow]]\nfor-each = \"input.items\"\nrun = \"a\"\ninput = \"{{'n': item, 'i': index}}\"\nas = \"out\"\nconcurrency = 4\n[[flow]]\nhook = \"created\"\ninput = \"out\"\n"
    ));
    let Entry::ForEach {
        concurrency, call, ..
    } = &m.workflow.flow[0]
    else {
        panic!("for-each")
    };
    assert_eq!(*concurrency, 4);
    assert_eq!(call.node, "a");
    let Entry::Hook { handlers, .. } = &m.workflow.flow[1] else {
        panic!("hook")
    };
    let names: Vec<&str> = handlers.iter().map(|h| h.node.as_str()).collect();
    assert_eq!(names, ["created.notify", "created.2"]);
}

#[test]
fn schemas_are_loaded_relative_to_the_manifest_and_must_be_valid() {
    let (_dir, path) = write(
        &format!(
            "[workflow]\nname = \"w\"\ninput-schema = \"in.json\"\noutput-schema = \"missing.json\"\n{STEP}[[flow]]\nrun = \"a\"\n"
        ),
        &[("in.json", r#"{"type": "object"}"#)],
    );
    let errors = load(&path, &options()).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert!(
        errors.to_string().contains("cannot read the schema"),
        "{errors}"
    );
    let (lines, _) = errors_with(
        &format!(
            "[workflow]\nname = \"w\"\ninput-schema = \"bad.json\"\n{STEP}[[flow]]\nrun = \"a\"\n"
        ),
        &[("bad.json", r#"{"type": 7}"#)],
    );
    assert!(lines[0].contains("is not a valid JSON Schema"), "{lines:?}");
}
