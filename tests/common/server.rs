//! A running `host serve` as a test fixture: started on a free loopback
//! port, spoken to over real HTTP, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Sandbox;

/// A running `host serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: Option<String>,
}

impl Server {
    pub fn start(sandbox: &Sandbox, dirs: &[&Path], extra: &[&str]) -> Server {
        Server::start_with_env(sandbox, dirs, extra, &[])
    }

    /// [`Server::start`] with more environment variables.
    pub fn start_with_env(
        sandbox: &Sandbox,
        dirs: &[&Path],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args: Vec<String> = vec!["serve".into()];
        args.extend(dirs.iter().map(|d| d.display().to_string()));
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(&args)
            .env("WASAGA_STATE", sandbox.state())
            .env("WASAGA_CACHE_DIR", super::cache_dir())
            .env_remove("WASAGA_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = listening_address(&mut child);
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        Server { child, base, token }
    }

    pub fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut request = self.agent().get(&format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value, Option<String>) {
        let mut request = self.agent().post(&format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.send_json(&body).unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            location,
        )
    }

    /// Polls a run until it is final.
    pub fn wait_final(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, report) = self.get(&format!("/runs/{run}"));
            if status == 200
                && ["done", "reverted", "failed", "cancelled"]
                    .contains(&report["status"].as_str().unwrap_or(""))
            {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} did not finish: {report}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(mut self) {
        // SIGTERM: a graceful stop.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder of probe manifests for the tests below.
pub fn probe_dir(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.path("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let text = text.replace("{probe}", &super::component("probe").display().to_string());
        std::fs::write(dir.join(name), text).unwrap();
    };
    std::fs::write(dir.join("greeting.schema.json"), r#"{"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 2}}}"#).unwrap();
    write(
        "greet.toml",
        "[workflow]\nname = \"greet\"\ninput-schema = \"greeting.schema.json\"\n[steps.hello]\ncomponent = \"{probe}\"\nconfig = { echo-input = true, output = { greeted = true } }\n[[flow]]\nrun = \"hello\"\nas = \"h\"\n[output]\nvalue = \"h\"\n",
    );
    write(
        "slow.toml",
        "[workflow]\nname = \"slow\"\n[steps.one]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 300, output = 1 }\n[steps.two]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 300, output = 2 }\n[steps.three]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 300, output = 3 }\n[[flow]]\nrun = \"one\"\n[[flow]]\nrun = \"two\"\n[[flow]]\nrun = \"three\"\nas = \"last\"\n[output]\nvalue = \"last\"\n",
    );
    write(
        "approval.toml",
        "[workflow]\nname = \"approval\"\n[steps.ask]\ncomponent = \"{probe}\"\nasync = true\nconfig = { output = 1 }\n[steps.after]\ncomponent = \"{probe}\"\nconfig = { echo-input = true }\n[[flow]]\nrun = \"ask\"\nas = \"answer\"\n[[flow]]\nrun = \"after\"\ninput = \"answer\"\nas = \"a\"\n[output]\nvalue = \"a\"\n",
    );
    write(
        "compensates.toml",
        "[workflow]\nname = \"compensates\"\n[steps.reserve]\ncomponent = \"{probe}\"\nconfig = { sleep-ms = 40, output = { reserved = true } }\n[steps.charge]\ncomponent = \"{probe}\"\nretries = { max = 1 }\nconfig = { sleep-ms = 40, fail-always = true, error-kind = \"conflict\", error-message = \"card declined\" }\n[[flow]]\nrun = \"reserve\"\n[[flow]]\nrun = \"charge\"\n",
    );
    dir
}

/// The address a `host serve` child prints on its first stdout line.
pub fn listening_address(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address: {line:?}"))
        .to_string()
}
