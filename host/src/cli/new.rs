//! `host new step NAME --lang rust|python|js`: a ready-to-build step project
//! (source with invoke and compensate, build configuration, a test manifest).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::UsageError;

#[derive(Debug, clap::Subcommand)]
pub enum NewCommand {
    /// A new step project.
    Step {
        /// The step's name (letters, digits, '-').
        #[arg(value_name = "NAME")]
        name: String,
        /// Its language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The folder to create it in [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The Wasaga repository (its wit/ and guest-sdk/) [default: the one this host was built from].
        #[arg(long, value_name = "PATH", env = "WASAGA_HOME")]
        sdk: Option<PathBuf>,
    },
}

/// A language a step can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the wasaga-sdk crate.
    Rust,
    /// Python, with componentize-py and the wasaga package.
    Python,
    /// JavaScript, with the wasaga module (QuickJS engine).
    Js,
}

pub fn new(command: NewCommand) -> Result<ExitCode, UsageError> {
    let NewCommand::Step {
        name,
        lang,
        dir,
        sdk,
    } = command;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(UsageError(format!(
            "error: '{name}' is not a step name: use lowercase letters, digits and '-', starting with a letter"
        )));
    }
    let home = sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let home = home.canonicalize().map_err(|_| {
        UsageError(format!(
            "error: the Wasaga repository is not at {}\n  pass --sdk PATH (or set WASAGA_HOME) to a checkout with wit/ and guest-sdk/",
            home.display()
        ))
    })?;
    if !home.join("wit").join("step.wit").is_file() {
        return Err(UsageError(format!(
            "error: {} has no wit/step.wit; pass --sdk PATH to a Wasaga checkout",
            home.display()
        )));
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(UsageError(format!(
            "error: {} exists and is not empty; pick another --dir",
            dir.display()
        )));
    }
    let module = name.replace('-', "_");
    let files = match lang {
        Lang::Rust => rust_files(&name, &module, &home),
        Lang::Python => python_files(&name, &module, &home),
        Lang::Js => js_files(&name, &module, &home),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                UsageError(format!("error: cannot create {}: {e}", parent.display()))
            })?;
        }
        std::fs::write(&path, text)
            .map_err(|e| UsageError(format!("error: cannot write {}: {e}", path.display())))?;
    }
    println!("created the {lang:?} step '{name}' in {}:", dir.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!("build it and run it:");
    println!("  cd {}", dir.display());
    println!("  host run --build {name}.toml --input '{{\"name\": \"World\"}}'");
    Ok(ExitCode::SUCCESS)
}

fn manifest(name: &str, component: &str, build: &str) -> String {
    format!(
        r#"# A workflow that runs the step once: `host run --build {name}.toml --input '{{"name": "World"}}'`
[workflow]
name = "{name}"

[steps.{name}]
component = "{component}"
build = "{build}"

[[flow]]
run = "{name}"
input = "input"
as = "result"

[output]
value = "result"
"#
    )
}

fn rust_files(name: &str, module: &str, home: &Path) -> Vec<(String, String)> {
    let sdk = home.join("guest-sdk").join("rust");
    vec![
        (
            "Cargo.toml".into(),
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wasaga-sdk = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}

# Its own workspace, wherever it is created.
[workspace]

[profile.release]
opt-level = "s"
strip = true
"#,
                sdk.display()
            ),
        ),
        (
            "src/lib.rs".into(),
            format!(
                r#"//! The `{name}` step.

use serde::{{Deserialize, Serialize}};
use wasaga_sdk::{{StepContext, StepError, StepResponse}};

#[derive(Deserialize)]
struct Input {{
    name: String,
}}

#[derive(Serialize)]
struct Output {{
    greeting: String,
}}

/// Does the step's work.
fn invoke(input: Input, ctx: &StepContext) -> Result<StepResponse<Output>, StepError> {{
    if input.name.trim().is_empty() {{
        return Err(StepError::invalid_data("a name is needed").permanent());
    }}
    wasaga_sdk::log::info(&format!("greeting {{}} (attempt {{}})", input.name, ctx.attempt));
    Ok(StepResponse::new(Output {{ greeting: format!("Hello, {{}}!", input.name) }}))
}}

/// Undoes it when a later step fails (receives the output, or None).
fn compensate(_output: Option<wasaga_sdk::Value>, _ctx: &StepContext) -> Result<(), StepError> {{
    wasaga_sdk::log::info("nothing to undo");
    Ok(())
}}

wasaga_sdk::create_step!(invoke, compensate);
"#
            ),
        ),
        (
            format!("{name}.toml"),
            manifest(
                name,
                &format!("target/wasm32-wasip2/release/{module}.wasm"),
                "cargo build --release --target wasm32-wasip2",
            ),
        ),
        (".gitignore".into(), "/target\n.wasaga/\n".into()),
    ]
}

fn python_files(name: &str, module: &str, home: &Path) -> Vec<(String, String)> {
    let build = format!(
        "componentize-py -d {} -w step componentize {module} -p . -p {} -o {module}.wasm",
        home.join("wit").display(),
        home.join("guest-sdk").join("python").display()
    );
    vec![
        (
            format!("{module}.py"),
            format!(
                r#""""The `{name}` step."""

from wasaga import InvalidData, StepResponse, create_step, log


def invoke(input, ctx):
    """Does the step's work."""
    name = input.get("name", "").strip()
    if not name:
        raise InvalidData("a name is needed", permanent=True)
    log.info(f"greeting {{name}} (attempt {{ctx.attempt}})")
    return StepResponse({{"greeting": f"Hello, {{name}}!"}})


def compensate(output, ctx):
    """Undoes it when a later step fails (receives the output, or None)."""
    log.info("nothing to undo")


WitWorld = create_step(invoke, compensate)
"#
            ),
        ),
        (
            format!("{name}.toml"),
            manifest(name, &format!("{module}.wasm"), &build),
        ),
        (
            ".gitignore".into(),
            "*.wasm\n.wasaga/\n__pycache__/\n".into(),
        ),
    ]
}

fn js_files(name: &str, module: &str, home: &Path) -> Vec<(String, String)> {
    let build = format!(
        "node {} step.js {module}.wasm",
        home.join("guest-sdk")
            .join("js")
            .join("build.mjs")
            .display()
    );
    vec![
        (
            "step.js".into(),
            format!(
                r#"// The `{name}` step.
import {{ createStep, InvalidData, log, StepResponse }} from "wasaga";

export const {{ invoke, compensate }} = createStep(
  // Does the step's work.
  (input, ctx) => {{
    const name = (input.name ?? "").trim();
    if (!name) throw new InvalidData("a name is needed", {{ permanent: true }});
    log.info(`greeting ${{name}} (attempt ${{ctx.attempt}})`);
    return new StepResponse({{ greeting: `Hello, ${{name}}!` }});
  }},
  // Undoes it when a later step fails (receives the output, or null).
  (output, ctx) => {{
    log.info("nothing to undo");
  }},
);
"#
            ),
        ),
        (
            format!("{name}.toml"),
            manifest(name, &format!("{module}.wasm"), &build),
        ),
        (".gitignore".into(), "*.wasm\n.wasaga/\n".into()),
    ]
}
