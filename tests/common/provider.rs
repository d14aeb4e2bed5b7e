//! The payments example's fake provider (`example-plugins/payments/provider.py`)
//! as a test fixture, and the checkout manifest pointed at it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use super::{Finished, Sandbox, component, repo};

/// The API key the provider accepts (and the value of the `pay-key` secret).
pub const KEY: &str = "sk_test_5ecret_value";

/// The fake payment provider of `example-plugins/payments`, on a free port.
pub struct Provider {
    child: Child,
    pub port: u16,
}

impl Provider {
    pub fn start(sandbox: &Sandbox, name: &str) -> Provider {
        let mut child = Command::new("python3")
            .arg(repo().join("example-plugins/payments/provider.py"))
            .args(["--port", "0", "--key", KEY, "--ledger"])
            .arg(sandbox.path(&format!("{name}-ledger.json")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the fake provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the provider said {line:?}"));
        Provider { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ledger(&self) -> Value {
        ureq::get(&format!("{}/v1/ledger", self.url()))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }

    pub fn control(&self, settings: Value) {
        ureq::post(&format!("{}/_control", self.url()))
            .send_json(settings)
            .unwrap();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The checkout example's manifest, pointed at `provider`, with `changes`
/// applied (pairs of text to replace).
pub fn checkout(sandbox: &Sandbox, provider: &Provider, changes: &[(&str, &str)]) -> PathBuf {
    let dir = repo().join("example-plugins/payments");
    let mut text = std::fs::read_to_string(dir.join("checkout.toml"))
        .unwrap()
        .replace("127.0.0.1:8099", &format!("127.0.0.1:{}", provider.port))
        .replace(
            "../../target/wasm32-wasip2/release/",
            &format!("{}/", super::wasm_dir().display()),
        )
        .replace("build = ", "# build = ");
    for (from, to) in changes {
        assert!(text.contains(from), "the manifest has {from:?}");
        text = text.replace(from, to);
    }
    for step in [
        "reserve-stock",
        "charge-payment",
        "create-order",
        "notify-customer",
    ] {
        component(step);
    }
    let path = sandbox.path("checkout.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn cart(card: &str) -> String {
    json!({"cart": "cart_1", "email": "ada@example.com", "amount": 4200, "currency": "eur",
           "card": card, "items": [{"sku": "mug", "quantity": 2}]})
    .to_string()
}

pub fn run_with_key(sandbox: &Sandbox, manifest: &Path, input: &str) -> Finished {
    let output = sandbox
        .command()
        .env("WASAGA_SECRET_PAY_KEY", KEY)
        .args(["run", manifest.to_str().unwrap(), "--input", input])
        .output()
        .unwrap();
    Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every byte of the state file (and its WAL) as text, to look for a secret.
pub fn state_bytes(sandbox: &Sandbox) -> String {
    let mut all = Vec::new();
    for name in ["state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(sandbox.path(name)) {
            all.extend(bytes);
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}
