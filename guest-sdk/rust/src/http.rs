//! Outbound HTTP for steps: a small blocking client over the standard
//! `wasi:http/outgoing-handler` (WASI 0.2), so the host's grant, secrets,
//! idempotency keys and limits apply to every request. Errors come back as
//! [`StepError`]s that say what happened.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::StepError;

/// The door to outbound HTTP: `ctx.http().post(url).json(&body)?.send()?`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Http {
    /// A `GET` request.
    pub fn get(&self, url: &str) -> Request {
        Request::new("GET", url)
    }
    /// A `POST` request.
    pub fn post(&self, url: &str) -> Request {
        Request::new("POST", url)
    }
    /// A `PUT` request.
    pub fn put(&self, url: &str) -> Request {
        Request::new("PUT", url)
    }
    /// A `PATCH` request.
    pub fn patch(&self, url: &str) -> Request {
        Request::new("PATCH", url)
    }
    /// A `DELETE` request.
    pub fn delete(&self, url: &str) -> Request {
        Request::new("DELETE", url)
    }
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// A response: status, headers, and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StepError::invalid_data(format!(
                "the response ({}) is not the JSON expected: {e}",
                self.status
            ))
        })
    }
}

impl Request {
    fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <token>`; the token is typically a secret's
    /// placeholder from [`crate::StepContext::secret`].
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A JSON body (and `content-type: application/json`).
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Request, StepError> {
        self.body = Some(serde_json::to_vec(body)?);
        Ok(self.header("content-type", "application/json"))
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// How long to wait for the response to start (the host also stops it
    /// at the step's deadline).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends it and reads the whole response.
    pub fn send(self) -> Result<Response, StepError> {
        let url = Url::parse(&self.url)?;
        let shown = format!("{} {}", self.method, url.shown());
        let fail = |code: ErrorCode| error_of(&shown, code);
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
            .chain(self.body.as_ref().map(|b| {
                (
                    "content-length".to_string(),
                    b.len().to_string().into_bytes(),
                )
            }))
            .collect();
        let headers = Fields::from_list(&entries).map_err(|e| {
            StepError::invalid_argument(format!("{shown}: a header is not valid: {e:?}"))
                .permanent()
        })?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| {
            StepError::invalid_argument(format!("{shown}: the {what} is not valid")).permanent()
        };
        request.set_method(&method).map_err(|_| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|_| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|_| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|_| invalid("path"))?;
        let options = self.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = timeout.as_nanos().min(u64::MAX as u128) as u64;
            let _ = options.set_first_byte_timeout(Some(nanos));
            options
        });
        // No body at all unless there is one: an opened body without a
        // length would go out chunked, and the request would wait for its end.
        let outgoing = match &self.body {
            Some(_) => Some(request.body().map_err(|_| invalid("body"))?),
            None => None,
        };
        let pending = outgoing_handler::handle(request, options).map_err(fail)?;
        if let Some(outgoing) = outgoing {
            {
                let stream = outgoing.write().map_err(|_| invalid("body"))?;
                for chunk in self.body.as_deref().unwrap_or_default().chunks(4096) {
                    stream.blocking_write_and_flush(chunk).map_err(|e| {
                        StepError::unknown(format!("{shown}: sending the body failed: {e:?}"))
                    })?;
                }
            }
            OutgoingBody::finish(outgoing, None).map_err(fail)?;
        }
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| StepError::unknown(format!("{shown}: no response")))?
            .map_err(|_| StepError::unknown(format!("{shown}: the response was already taken")))?
            .map_err(fail)?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|_| StepError::unknown(format!("{shown}: the body cannot be read")))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|_| StepError::unknown(format!("{shown}: the body cannot be read")))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(body_error(
                            &shown,
                            wasip2::http::types::http_error_code(&e),
                            e.to_debug_string(),
                        ));
                    }
                }
            }
        }
        let _ = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// What a failed read of a response body tells the step. wasmtime hands a
/// body's failure to the guest as text only (no `error-code`), so the
/// host's words are matched here.
fn body_error(shown: &str, code: Option<ErrorCode>, text: String) -> StepError {
    if let Some(code) = code {
        return error_of(shown, code);
    }
    if text.contains("body size exceeds limit") {
        return StepError::invalid_data(format!(
            "{shown}: the response is too large ({text}; the step's http grant sets max-response)"
        ))
        .permanent();
    }
    if text.contains("timed out") || text.contains("timeout") {
        return StepError::unknown(format!("{shown}: the response body timed out ({text})"));
    }
    StepError::unknown(format!("{shown}: reading the body failed: {text}"))
}

/// What a failed request tells the step.
fn error_of(shown: &str, code: ErrorCode) -> StepError {
    match code {
        ErrorCode::HttpRequestDenied => StepError::not_allowed(format!(
            "{shown} was denied: the step is not granted that host (the step's log and the run's trace show the grant to add)"
        ))
        .permanent(),
        ErrorCode::DestinationIpProhibited => StepError::not_allowed(format!(
            "{shown} was denied: it goes to a private address its grant does not name (the step's log says which)"
        ))
        .permanent(),
        ErrorCode::HttpResponseBodySize(limit) => StepError::invalid_data(format!(
            "{shown}: the response is too large{}",
            limit
                .map(|l| format!(" (more than the {l} bytes the step may read)"))
                .unwrap_or_default()
        ))
        .permanent(),
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => {
            StepError::unknown(format!("{shown} timed out"))
        }
        ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_) => {
            StepError::unknown(format!("{shown}: the connection failed ({code:?})"))
        }
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => {
            StepError::unknown(format!("{shown}: TLS failed ({code:?})"))
        }
        ErrorCode::InternalError(Some(message)) => {
            StepError::unknown(format!("{shown} failed: {message}")).permanent()
        }
        other => StepError::unknown(format!("{shown} failed: {other:?}")),
    }
}

/// The parts of a URL a request needs.
struct Url {
    scheme: Scheme,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, StepError> {
        let bad = |why: &str| {
            StepError::invalid_argument(format!("'{url}' is not a URL a step can request: {why}"))
                .permanent()
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("use http:// or https://")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            scheme,
            authority: authority.to_string(),
            path_and_query,
        })
    }

    /// The URL without its query string, for messages.
    fn shown(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            _ => "https",
        };
        let path = self.path_and_query.split('?').next().unwrap_or_default();
        format!("{scheme}://{}{path}", self.authority)
    }
}
