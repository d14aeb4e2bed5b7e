//! The HTTP client the OTLP exporter posts its batches with: hyper over the
//! host's own TLS setup (the system's roots plus `OTEL_EXPORTER_OTLP_CERTIFICATE`),
//! run on the host's tokio runtime even though the exporter's batch thread
//! is not a tokio thread. It may not reach steps' traffic (collectors are
//! usually on private addresses, which steps' client refuses).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// The most of a collector's answer read (it is a small protobuf, or an
/// error text).
const MAX_ANSWER: usize = 64 * 1024;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Posts the exporter's requests on `runtime`.
#[derive(Clone)]
pub struct OtlpClient {
    client: Client<Connector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpClient {
    /// A client on `runtime` whose requests end within `timeout`, trusting
    /// the certificates of `ca_file` besides the system's.
    pub fn new(
        runtime: tokio::runtime::Handle,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<OtlpClient, String> {
        use crate::capabilities::http::client::{https_connector, tls_config};
        let https = https_connector(HttpConnector::new(), tls_config(ca_file)?, timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(OtlpClient {
            client,
            runtime,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let uri = request.uri().clone();
        // Spawned on the host's runtime: the exporter awaits it from its own
        // thread, which has no reactor to drive hyper's sockets.
        let sent = self.runtime.spawn(async move {
            let exchange = async {
                let response = client.request(request.map(Full::new)).await?;
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, MAX_ANSWER)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        let answer = sent.await.map_err(HttpError::from).and_then(|r| r);
        match &answer {
            Ok(response) if !response.status().is_success() => tracing::warn!(
                "traces not taken by {uri}: {} {}",
                response.status(),
                String::from_utf8_lossy(response.body()).trim()
            ),
            Err(e) => tracing::warn!("traces not sent to {uri}: {e}"),
            Ok(_) => {}
        }
        answer
    }
}
