//! `http`: outbound HTTP through the standard `wasi:http/outgoing-handler`,
//! linked from wasmtime-wasi-http. Granted by
//! `http = ["scheme://host[:port]", ...]` (or
//! `http = { allow = [...], max-response = "16MiB", max-requests = 100 }`);
//! enforced in the send hook ([`send`]), which also blocks private
//! addresses, swaps secrets in, adds idempotency keys, bounds time and size,
//! and notes every request for the trace. Its per-workflow state is the
//! pooled client ([`client::OutboundClient`]); its per-call state is
//! [`OutboundCall`]. It may not read the manifest or the journal.

pub mod client;
pub mod send;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use toml::Spanned;
use wasmtime::component::Linker;

use super::secrets::Placeholders;
use crate::app::grants::toml_list;
use crate::app::hosts::{HostPattern, Scheme};
use crate::app::{Grant, GrantEntry, GrantParser, GrantProblems};
use crate::manifest::parse_size;
use crate::saga::OutboundLog;

pub use client::{ClientOptions, OutboundClient};
pub use send::OutboundHooks;

/// The key of its grant.
pub const KEY: &str = "http";

/// The largest response body a call reads unless its grant says otherwise.
pub const DEFAULT_MAX_RESPONSE: u64 = 16 << 20;
/// The most requests one call attempt may make unless its grant says otherwise.
pub const DEFAULT_MAX_REQUESTS: u32 = 100;
/// The largest `max-response` a grant may ask for.
const MAX_MAX_RESPONSE: u64 = 1 << 30;
/// The largest `max-requests` a grant may ask for.
const MAX_MAX_REQUESTS: u32 = 10_000;

/// `http = [...]`: where a step's requests may go, and its limits.
#[derive(Debug, Clone, Default)]
pub struct HttpGrant {
    /// The allowed destinations.
    pub allow: Vec<HostPattern>,
    /// `max-response`, when set.
    pub max_response: Option<u64>,
    /// `max-requests`, when set.
    pub max_requests: Option<u32>,
}

impl HttpGrant {
    /// The first pattern allowing `scheme://host:port`.
    pub fn allowing(&self, scheme: Scheme, host: &str, port: u16) -> Option<&HostPattern> {
        self.allow.iter().find(|p| p.matches(scheme, host, port))
    }

    /// Whether some pattern allowing the destination names `address` itself
    /// (the only way to reach a private address).
    pub fn names(&self, scheme: Scheme, host: &str, port: u16, address: IpAddr) -> bool {
        self.allow
            .iter()
            .any(|p| p.matches(scheme, host, port) && p.names_address(address))
    }

    /// The largest response body a call reads.
    pub fn max_response(&self) -> u64 {
        self.max_response.unwrap_or(DEFAULT_MAX_RESPONSE)
    }

    /// The most requests a call attempt makes.
    pub fn max_requests(&self) -> u32 {
        self.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS)
    }
}

impl Grant for HttpGrant {
    fn to_toml(&self) -> String {
        let allow = toml_list(self.allow.iter().map(HostPattern::as_str));
        if self.max_response.is_none() && self.max_requests.is_none() {
            return format!("http = {allow}");
        }
        let mut parts = vec![format!("allow = {allow}")];
        if let Some(bytes) = self.max_response {
            parts.push(format!("max-response = \"{}\"", size_text(bytes)));
        }
        if let Some(count) = self.max_requests {
            parts.push(format!("max-requests = {count}"));
        }
        format!("http = {{ {} }}", parts.join(", "))
    }
}

fn size_text(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// The grant written as a table with options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WrittenTable {
    allow: Vec<Spanned<String>>,
    max_response: Option<Spanned<String>>,
    max_requests: Option<Spanned<u32>>,
}

/// Reads `http = [...]` or `http = { allow = [...], ... }`.
pub struct HttpGrantParser;

impl GrantParser for HttpGrantParser {
    fn key(&self) -> &'static str {
        KEY
    }

    fn parse(
        &self,
        entry: &GrantEntry<'_>,
        problems: &mut GrantProblems,
    ) -> Option<Arc<dyn Grant>> {
        // Spans do not survive serde's untagged enums: pick the shape by its first character.
        let table = match entry.text().trim_start().chars().next() {
            Some('[') => WrittenTable {
                allow: entry.deserialize(problems)?,
                max_response: None,
                max_requests: None,
            },
            Some('{') => entry.deserialize(problems)?,
            _ => {
                problems.error(entry.span(), "an http grant is a list of hosts or a table").help(
                    "write http = [\"https://api.example.com\"] or http = { allow = [\"https://api.example.com\"], max-response = \"32MiB\", max-requests = 200 }",
                );
                return None;
            }
        };
        let mut grant = HttpGrant::default();
        for pattern in &table.allow {
            match HostPattern::parse(pattern.get_ref()) {
                Ok(parsed) => grant.allow.push(parsed),
                Err(e) => {
                    problems
                        .error(entry.locate(pattern.span()), e.message)
                        .help(e.help);
                }
            }
        }
        if let Some(size) = &table.max_response {
            match parse_size(size.get_ref()) {
                Ok(bytes) if bytes as u64 <= MAX_MAX_RESPONSE && bytes > 0 => {
                    grant.max_response = Some(bytes as u64)
                }
                Ok(_) => {
                    problems
                        .error(
                            entry.locate(size.span()),
                            "max-response must be between 1 byte and 1GiB",
                        )
                        .help("e.g. max-response = \"32MiB\"");
                }
                Err(e) => {
                    problems
                        .error(entry.locate(size.span()), e)
                        .help("e.g. max-response = \"32MiB\"");
                }
            }
        }
        if let Some(count) = &table.max_requests {
            if *count.get_ref() == 0 || *count.get_ref() > MAX_MAX_REQUESTS {
                problems
                    .error(
                        entry.locate(count.span()),
                        format!("max-requests must be between 1 and {MAX_MAX_REQUESTS}"),
                    )
                    .help("it bounds the requests of one call attempt; the default is 100");
            } else {
                grant.max_requests = Some(*count.get_ref());
            }
        }
        (!grant.allow.is_empty()).then(|| Arc::new(grant) as Arc<dyn Grant>)
    }
}

/// What one call attempt's requests share: the secrets' placeholders it was
/// handed, how many requests it made, where they are noted, its idempotency
/// key and deadline.
#[derive(Debug)]
pub struct OutboundCall {
    /// The placeholders handed out by `secrets.placeholder`.
    pub placeholders: Placeholders,
    /// Requests sent so far (the next one's ordinal is this plus one).
    pub sent: AtomicU32,
    /// Where each request is noted for the trace.
    pub log: Arc<OutboundLog>,
    /// The call's idempotency key (`workflow:transaction:step:action`).
    pub idempotency_key: Arc<str>,
    /// When the call must end.
    pub deadline: Option<Instant>,
    /// The attempt's span in its run's trace: each request carries a
    /// `traceparent` of its own span under it.
    pub span: Option<crate::telemetry::CallSpan>,
}

impl OutboundCall {
    /// The state of a call with this key and deadline, noting into `log`.
    pub fn new(
        idempotency_key: Arc<str>,
        deadline: Option<Instant>,
        log: Arc<OutboundLog>,
    ) -> Self {
        OutboundCall {
            placeholders: Placeholders::default(),
            sent: AtomicU32::new(0),
            log,
            idempotency_key,
            deadline,
            span: None,
        }
    }

    /// The same, in the trace of `span` (if any).
    pub fn in_span(mut self, span: Option<crate::telemetry::CallSpan>) -> Self {
        self.span = span;
        self
    }
}

/// Links `wasi:http` (types and outgoing-handler) over the store's view.
pub fn add_to_linker<T: wasmtime_wasi_http::WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::{grants_of, load_errors};

    #[test]
    fn a_list_or_a_table_is_read_with_its_limits() {
        let grants = grants_of("http = [\"https://api.pay.example\", \"http://127.0.0.1:*\"]");
        let grant = grants.get::<HttpGrant>(KEY).unwrap();
        assert_eq!(grant.allow.len(), 2);
        assert_eq!(grant.max_response(), DEFAULT_MAX_RESPONSE);
        let grants = grants_of(
            "http = { allow = [\"https://api.pay.example\"], max-response = \"1MiB\", max-requests = 3 }",
        );
        let grant = grants.get::<HttpGrant>(KEY).unwrap();
        assert_eq!(grant.max_response(), 1 << 20);
        assert_eq!(grant.max_requests(), 3);
        assert_eq!(
            grant.to_toml(),
            "http = { allow = [\"https://api.pay.example\"], max-response = \"1MiB\", max-requests = 3 }"
        );
    }

    #[test]
    fn bad_patterns_are_located_with_the_fix() {
        let rendered = load_errors("http = [\"api.pay.example\", \"https://x.example/v1\"]");
        assert!(
            rendered.contains("'api.pay.example' has no scheme"),
            "{rendered}"
        );
        assert!(
            rendered.contains("\"https://api.pay.example\""),
            "{rendered}"
        );
        assert!(rendered.contains("has a path"), "{rendered}");
        assert!(rendered.contains("main.toml:7"), "{rendered}");
        let rendered = load_errors("http = { allow = [\"https://x.example\"], max-requests = 0 }");
        assert!(
            rendered.contains("max-requests must be between"),
            "{rendered}"
        );
        let rendered = load_errors("http = 3");
        assert!(
            rendered.contains("a list of hosts or a table"),
            "{rendered}"
        );
    }
}
