//! OpenTelemetry traces over OTLP/HTTP: where they go (`--otlp-endpoint`, or
//! the standard `OTEL_EXPORTER_OTLP_*` variables), the exporter and its batch
//! thread, and flushing them when the host stops. It may not decide what a
//! span says (`spans` builds them from the journal's committed records).

mod client;
mod spans;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};

pub use spans::RunSpans;

/// How long a batch may take to reach the collector (`OTEL_EXPORTER_OTLP_TIMEOUT`
/// overrides it, in milliseconds).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The service name spans carry when `OTEL_SERVICE_NAME` says none.
const SERVICE_NAME: &str = "wasaga";

/// The process's trace exporter.
pub struct Telemetry {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
    /// Where batches go (for the log).
    pub endpoint: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Telemetry {
    /// The exporter `flag` (`--otlp-endpoint`) or the environment asks for,
    /// or `None` when neither names an endpoint (or `OTEL_SDK_DISABLED=true`,
    /// or `OTEL_TRACES_EXPORTER=none`). An endpoint or protocol that cannot
    /// work is an error, so a typo does not silently lose every trace.
    pub fn from_env(flag: Option<&str>) -> Result<Option<Arc<Telemetry>>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporter) = var("OTEL_TRACES_EXPORTER") {
            match exporter.trim() {
                "otlp" => {}
                "none" => return Ok(None),
                other => {
                    return Err(format!(
                        "OTEL_TRACES_EXPORTER={other} is not supported: Wasaga exports traces over OTLP (\"otlp\", the default) or not at all (\"none\")"
                    ));
                }
            }
        }
        let endpoint = match (flag, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => traces_url(base, "--otlp-endpoint")?,
            // The per-signal variable is the whole URL, as the spec says.
            (None, Some(url)) => checked_url(&url, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")?,
            (None, None) => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => traces_url(&base, "OTEL_EXPORTER_OTLP_ENDPOINT")?,
                None => return Ok(None),
            },
        };
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                if protocol.trim() != "http/protobuf" {
                    return Err(format!(
                        "{name}={protocol} is not supported: Wasaga sends traces as OTLP over HTTP with protobuf (\"http/protobuf\"); point it at a collector's HTTP port (4318)"
                    ));
                }
                break;
            }
        }
        let ca_file = var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
            .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"))
            .map(std::path::PathBuf::from);
        let timeout = var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(EXPORT_TIMEOUT, Duration::from_millis);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "traces need the host's async runtime".to_string())?;
        let client = client::OtlpClient::new(runtime, ca_file.as_deref(), timeout)
            .map_err(|e| format!("cannot set up the trace exporter: {e}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot set up the trace exporter for {endpoint}: {e}"))?;
        // The batch thread: spans wait at most `OTEL_BSP_SCHEDULE_DELAY`
        // (5 s by default) and a full queue drops spans, never blocks a run.
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource());
        Ok(Some(Arc::new(Telemetry {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("wasaga")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            endpoint,
        })))
    }

    /// Queues a finished span for the next batch.
    fn export(&self, span: SpanData) {
        self.processor.on_end(span);
    }

    /// Sends what is queued and stops the batch thread (when the host
    /// stops; spans ended later are dropped).
    pub async fn shutdown(&self) {
        let processor = self.processor.clone();
        // The export awaits a request on this runtime: waiting here on a
        // blocking thread leaves the runtime free to send it.
        let stopped =
            tokio::task::spawn_blocking(move || processor.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the last traces may not have been sent: {e}"),
            Err(e) => tracing::warn!("the last traces may not have been sent: {e}"),
        }
    }
}

/// The resource every span names: the service (`wasaga` unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` says otherwise) and
/// the SDK.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// The traces URL of a collector's base URL (`/v1/traces` appended, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` means it), or the URL itself if it already
/// ends so.
fn traces_url(base: &str, given_by: &str) -> Result<String, String> {
    let base = checked_url(base, given_by)?;
    let trimmed = base.trim_end_matches('/');
    Ok(if trimmed.ends_with("/v1/traces") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    })
}

fn checked_url(url: &str, given_by: &str) -> Result<String, String> {
    let url = url.trim();
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| format!("{given_by}: '{url}' is not a URL: {e}"))?;
    match (parsed.scheme_str(), parsed.host()) {
        (Some("http" | "https"), Some(_)) => Ok(url.to_string()),
        _ => Err(format!(
            "{given_by}: '{url}' is not an http:// or https:// URL of an OTLP collector (e.g. http://127.0.0.1:4318)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_gets_the_traces_path_and_a_bad_one_is_refused() {
        let url = |base| traces_url(base, "--otlp-endpoint");
        assert_eq!(
            url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(
            url("https://c/otlp/v1/traces").unwrap(),
            "https://c/otlp/v1/traces"
        );
        for bad in ["127.0.0.1:4318", "grpc://c:4317", "http://", "not a url"] {
            let error = url(bad).unwrap_err();
            assert!(error.starts_with("--otlp-endpoint: "), "{error}");
        }
    }
}
