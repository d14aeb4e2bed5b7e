//! The send hook: every request a guest makes through
//! `wasi:http/outgoing-handler` comes here (wasmtime-wasi-http's
//! `WasiHttpHooks::send_request`). In order: count it against the call's
//! limit, check the grant, refuse a private address the grant does not name,
//! swap in the secrets bound for this destination, add the idempotency key,
//! send it on the pooled client within the call's deadline, and bound the
//! response body in size and in time between bytes. Every request is noted
//! for the trace, denials with the grant that would allow them.
//! It may not touch the manifest, the journal or the guest's memory.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::client::{OutboundClient, is_private, private_address};
use super::{HttpGrant, KEY, OutboundCall};
use crate::app::Grants;
use crate::app::hosts::{HostPattern, Scheme};
use crate::saga::{OutboundLog, OutboundRequest};

/// How long a response may take to start unless the guest asks for less.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a response body may pause between two chunks.
pub const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body the host reads whole to put a secret into it.
pub const MAX_SWAPPED_BODY: usize = 16 << 20;

/// The header each request carries so a provider can deduplicate retries.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The send hook of one call.
pub struct OutboundHooks {
    /// The call's shared state (placeholders, count, log, key, deadline).
    pub call: Arc<OutboundCall>,
    /// The step's grants.
    pub grants: Arc<Grants>,
    /// The pooled client.
    pub client: Arc<OutboundClient>,
    /// The step's call name, for the log.
    pub node: Arc<str>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// A request refused before it was sent, with what to tell the trace.
struct Refused {
    error: Error,
    message: String,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_error: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let started = Instant::now();
        // Counted first: past the limit a request is refused without a note
        // of its own (one says so), so a guest looping on requests cannot
        // grow the trace or the log.
        let ordinal = self
            .call
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let limit = self
            .grants
            .get::<HttpGrant>(KEY)
            .map_or(super::DEFAULT_MAX_REQUESTS, HttpGrant::max_requests);
        if ordinal > limit {
            let message = format!(
                "the call made more than {limit} requests (raise it with http = {{ allow = [...], max-requests = N }})"
            );
            if ordinal == limit.saturating_add(1) {
                tracing::warn!(target: "step", step = &*self.node, "refused: {message}");
                self.call.log.push(OutboundRequest {
                    method: request.method().to_string(),
                    url: trace_url(request.uri()),
                    status: None,
                    error: Some(format!(
                        "refused: {message}; later requests are refused too"
                    )),
                    duration_ms: 0.0,
                    started_at: None,
                });
            }
            return Box::new(async move { Err(Error::InternalError(Some(message))) });
        }
        let url = trace_url(request.uri());
        let method = request.method().to_string();
        let log = self.call.log.clone();
        let node = self.node.clone();
        let index = log.push(OutboundRequest {
            method: method.clone(),
            url: url.clone(),
            status: None,
            error: None,
            duration_ms: 0.0,
            started_at: Some(humantime::format_rfc3339_micros(SystemTime::now()).to_string()),
        });
        let note_failure = move |log: &OutboundLog, message: String| {
            tracing::warn!(target: "step", step = &*node, "{method} {url}: {message}");
            log.update(index, |r| {
                r.error = Some(message);
                r.duration_ms = ms(started.elapsed());
            });
        };
        let prepared = self.prepare(request, ordinal);
        let (mut request, grant) = match prepared {
            Ok(prepared) => prepared,
            Err(refused) => {
                note_failure(&log, refused.message);
                let error = refused.error;
                return Box::new(async move { Err(error) });
            }
        };
        if let Some(span) = &self.call.span {
            // The request's own span (its place in the trace's list, from
            // 1) becomes the receiver's parent; a guest's own value is
            // replaced, as the host owns the trace.
            let traceparent = span.request_traceparent(index as u32 + 1);
            if let Ok(value) = http::HeaderValue::from_str(&traceparent) {
                request.headers_mut().insert("traceparent", value);
            }
        }
        let client = self.client.clone();
        let call = self.call.clone();
        Box::new(async move {
            let result = send(&client, &call, request, options, &grant, started).await;
            match result {
                Ok((mut response, between, bound)) => {
                    let status = response.status().as_u16();
                    log.update(index, |r| {
                        r.status = Some(status);
                        r.duration_ms = ms(started.elapsed());
                    });
                    if !bound.is_empty() {
                        scrub_headers(response.headers_mut(), &bound);
                    }
                    let limit = grant.max_response();
                    let response = response.map(|body| {
                        GuardedBody {
                            inner: body,
                            limit,
                            received: 0,
                            between,
                            timer: None,
                            log: Some((log, index)),
                            scrub: (!bound.is_empty()).then(|| Echo::new(bound)),
                        }
                        .boxed_unsync()
                    });
                    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
                        Box::new(async { Ok(()) });
                    Ok((response, io))
                }
                Err(refused) => {
                    note_failure(&log, refused.message);
                    Err(refused.error)
                }
            }
        })
    }
}

impl OutboundHooks {
    /// Checks the grant and the destination and rewrites the request
    /// (Host, idempotency key) before anything leaves; a request with a
    /// secret to swap into its body is finished in [`send`].
    fn prepare(
        &self,
        mut request: http::Request<WasiBody>,
        ordinal: u32,
    ) -> Result<(http::Request<WasiBody>, HttpGrant), Refused> {
        let granted = self.grants.get::<HttpGrant>(KEY);
        let uri = request.uri().clone();
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => {
                return Err(Refused {
                    error: Error::HttpProtocolError,
                    message: "refused: only http and https are supported".into(),
                });
            }
        };
        let Some(host) = uri.host() else {
            return Err(Refused {
                error: Error::HttpRequestUriInvalid,
                message: "refused: the URL has no host".into(),
            });
        };
        // The authority of the URL decides where the request goes, never a
        // Host header (wasmtime forbids guests to set one; it is set again here).
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let denied_line = || {
            let mut wanted = granted.cloned().unwrap_or_default();
            let pattern = destination_pattern(scheme, host, port, uri.port_u16().is_some());
            if let Ok(pattern) = HostPattern::parse(&pattern) {
                wanted.allow.push(pattern);
            }
            self.grants.denial(
                KEY,
                Arc::new(wanted),
                &format!("HTTP requests to {}://{host}:{port}", scheme.as_str()),
            )
        };
        let Some(grant) = granted.filter(|g| g.allowing(scheme, host, port).is_some()) else {
            return Err(Refused {
                error: Error::HttpRequestDenied,
                message: format!("denied: {}", denied_line()),
            });
        };
        if let Ok(address) = host.parse::<IpAddr>()
            && is_private(address)
            && !grant.names(scheme, host, port, address)
        {
            return Err(Refused {
                error: Error::DestinationIpProhibited,
                message: format!(
                    "denied: {address} is a private address, which only a grant naming it may reach (e.g. \"{}\")",
                    destination_pattern(scheme, host, port, true)
                ),
            });
        }
        // host[:port], never a `user:password@` the URL may carry.
        let host_header = match uri.port_u16() {
            Some(port) => format!("{}:{port}", uri.host().unwrap_or_default()),
            None => uri.host().unwrap_or_default().to_string(),
        };
        let headers = request.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&host_header) {
            headers.insert(HOST, value);
        }
        if !headers.contains_key(&IDEMPOTENCY_KEY)
            && let Ok(value) =
                HeaderValue::from_str(&format!("{}:{ordinal}", self.call.idempotency_key))
        {
            headers.insert(IDEMPOTENCY_KEY, value);
        }
        Ok((request, grant.clone()))
    }
}

/// The pattern that would allow exactly this destination.
fn destination_pattern(scheme: Scheme, host: &str, port: u16, explicit_port: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if explicit_port && port != scheme.default_port() {
        format!("{}://{host}:{port}", scheme.as_str())
    } else {
        format!("{}://{host}", scheme.as_str())
    }
}

/// `scheme://authority/path`, without the query string (it may hold
/// tokens), as the guest wrote it (before any secret is swapped in).
fn trace_url(uri: &http::Uri) -> String {
    let authority = uri.authority().map_or("", |a| a.as_str());
    // Without `user:password@`.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let mut url = format!(
        "{}://{authority}{}",
        uri.scheme_str().unwrap_or("https"),
        uri.path()
    );
    if url.len() > MAX_TRACE_URL {
        let cut = (0..=MAX_TRACE_URL)
            .rev()
            .find(|i| url.is_char_boundary(*i))
            .unwrap_or(0);
        url.truncate(cut);
        url.push('…');
    }
    url
}

/// The longest URL a trace entry keeps (a path can be as long as a guest likes).
const MAX_TRACE_URL: usize = 2048;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Swaps secrets in, sends, and waits for the response's headers within the
/// first-byte timeout and the call's deadline. Returns the response and how
/// long its body may pause between chunks.
async fn send(
    client: &OutboundClient,
    call: &OutboundCall,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    grant: &HttpGrant,
    started: Instant,
) -> Result<(http::Response<hyper::body::Incoming>, Duration, Bound), Refused> {
    let _ = grant;
    let options = options.unwrap_or_default();
    let (request, bound) = swap_secrets(call, request).await?;
    let client = client.client().map_err(|message| Refused {
        error: Error::ConfigurationError,
        message,
    })?;
    let first_byte = options
        .first_byte_timeout
        .unwrap_or(FIRST_BYTE_TIMEOUT)
        .min(FIRST_BYTE_TIMEOUT)
        + options
            .connect_timeout
            .unwrap_or(super::client::CONNECT_TIMEOUT)
            .min(super::client::CONNECT_TIMEOUT);
    let mut until = started + first_byte;
    let mut cut_by_deadline = false;
    if let Some(deadline) = call.deadline
        && deadline < until
    {
        until = deadline;
        cut_by_deadline = true;
    }
    let between = options
        .between_bytes_timeout
        .unwrap_or(BETWEEN_BYTES_TIMEOUT)
        .min(BETWEEN_BYTES_TIMEOUT);
    match tokio::time::timeout_at(until.into(), client.request(request)).await {
        Ok(Ok(response)) => Ok((response, between, bound)),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(Refused {
            error: Error::ConnectionReadTimeout,
            message: if cut_by_deadline {
                "timed out: the call's deadline passed before the response came".into()
            } else {
                format!(
                    "timed out: no response within {}",
                    humantime::format_duration(first_byte)
                )
            },
        }),
    }
}

/// What went wrong with a request that could not be sent or answered.
fn classify(error: &hyper_util::client::legacy::Error) -> Refused {
    if let Some(private) = private_address(error) {
        return Refused {
            error: Error::DestinationIpProhibited,
            message: format!("denied: {private}"),
        };
    }
    let chain = {
        let mut parts = Vec::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            let text = e.to_string();
            if parts.last() != Some(&text) {
                parts.push(text);
            }
            current = e.source();
        }
        parts.join(": ")
    };
    let lower = chain.to_ascii_lowercase();
    let error = if lower.contains("certificate") || lower.contains("tls") {
        Error::TlsCertificateError
    } else if lower.contains("dns") || lower.contains("failed to lookup") {
        Error::DnsError {
            rcode: Some(chain.clone()),
            info_code: None,
        }
    } else if error.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::HttpProtocolError
    };
    Refused {
        error,
        message: format!("failed: {chain}"),
    }
}

/// The secrets swapped into one request: (placeholder, value).
type Bound = Vec<(String, String)>;

/// Puts each secret's value where its placeholder is (headers, path and
/// query, body), but only when the request goes to one of the secret's
/// hosts; elsewhere the placeholder goes out as it is, and is useless.
async fn swap_secrets(
    call: &OutboundCall,
    request: http::Request<WasiBody>,
) -> Result<(http::Request<WasiBody>, Bound), Refused> {
    let issued = call.placeholders.issued();
    if issued.is_empty() {
        return Ok((request, Vec::new()));
    }
    let uri = request.uri();
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        _ => Scheme::Https,
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(scheme.default_port());
    let bound: Vec<(&str, &str)> = issued
        .iter()
        .filter(|(_, secret)| {
            secret
                .hosts()
                .iter()
                .any(|p| p.matches(scheme, &host, port))
        })
        .map(|(placeholder, secret)| (placeholder.as_str(), secret.value()))
        .collect();
    if bound.is_empty() {
        return Ok((request, Vec::new()));
    }
    let owned: Bound = bound
        .iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
    let (mut parts, body) = request.into_parts();
    for value in parts.headers.values_mut() {
        let Ok(text) = value.to_str() else { continue };
        let swapped = swap_text(text, &bound);
        if swapped != text
            && let Ok(new) = HeaderValue::from_str(&swapped)
        {
            let mut new = new;
            new.set_sensitive(true);
            *value = new;
        }
    }
    if let Some(path) = parts.uri.path_and_query().map(|p| p.as_str().to_string()) {
        let swapped = swap_text(&path, &bound);
        if swapped != path {
            let mut uri = parts.uri.clone().into_parts();
            uri.path_and_query = swapped.parse().ok();
            if let Ok(new) = http::Uri::from_parts(uri) {
                parts.uri = new;
            }
        }
    }
    let bytes = http_body_util::Limited::new(body, MAX_SWAPPED_BODY)
        .collect()
        .await
        .map_err(|_| Refused {
            error: Error::HttpRequestBodySize(Some(MAX_SWAPPED_BODY as u64)),
            message: format!(
                "refused: a request carrying a secret may have a body of at most {} MiB",
                MAX_SWAPPED_BODY >> 20
            ),
        })?
        .to_bytes();
    let mut body = bytes.to_vec();
    for (placeholder, value) in &bound {
        if let Some(swapped) = swap_bytes(&body, placeholder.as_bytes(), value.as_bytes()) {
            body = swapped;
        }
    }
    if parts.headers.contains_key(CONTENT_LENGTH) {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let body = http_body_util::Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((http::Request::from_parts(parts, body), owned))
}

fn swap_text(text: &str, bound: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (placeholder, value) in bound {
        if text.contains(placeholder) {
            text = text.replace(placeholder, value);
        }
    }
    text
}

/// `haystack` with every `needle` replaced, or `None` when there is none.
fn swap_bytes(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    let mut found = false;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(replacement);
            i += needle.len();
            found = true;
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    found.then_some(out)
}

/// A response body held to the grant's size and to a pause limit between
/// chunks; past either, the guest's read fails and the trace says why.
struct GuardedBody {
    inner: hyper::body::Incoming,
    limit: u64,
    received: u64,
    between: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    log: Option<(Arc<OutboundLog>, usize)>,
    /// The secrets of the request, when it carried some: a server that
    /// echoes one back (an error page quoting the request, a TRACE) must
    /// not hand the value to the guest, which could send it anywhere.
    scrub: Option<Echo>,
}

/// Replaces secret values with their placeholders in a body as it streams,
/// holding back the last bytes of each chunk that could begin a value split
/// across two chunks.
struct Echo {
    bound: Bound,
    held: Vec<u8>,
    keep: usize,
    ended: bool,
}

impl Echo {
    fn new(bound: Bound) -> Echo {
        let keep = bound
            .iter()
            .map(|(_, v)| v.len())
            .max()
            .unwrap_or(0)
            .saturating_sub(1);
        Echo {
            bound,
            held: Vec::new(),
            keep,
            ended: false,
        }
    }

    /// Takes a chunk in; returns what may go to the guest now.
    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        self.replace();
        let ready = self.held.len().saturating_sub(self.keep);
        Bytes::from(self.held.drain(..ready).collect::<Vec<u8>>())
    }

    /// The end of the body: everything held back.
    fn finish(&mut self) -> Bytes {
        self.ended = true;
        self.replace();
        Bytes::from(std::mem::take(&mut self.held))
    }

    fn replace(&mut self) {
        for (placeholder, value) in &self.bound {
            if let Some(swapped) = swap_bytes(&self.held, value.as_bytes(), placeholder.as_bytes())
            {
                self.held = swapped;
            }
        }
    }
}

/// Response headers with secret values put back as their placeholders (and
/// no `content-length`: the scrubbed body may differ in length).
fn scrub_headers(headers: &mut http::HeaderMap, bound: &Bound) {
    headers.remove(CONTENT_LENGTH);
    for value in headers.values_mut() {
        let Ok(text) = value.to_str() else { continue };
        let mut scrubbed = text.to_string();
        for (placeholder, secret) in bound {
            scrubbed = scrubbed.replace(secret.as_str(), placeholder);
        }
        if scrubbed != text
            && let Ok(new) = HeaderValue::from_str(&scrubbed)
        {
            *value = new;
        }
    }
}

impl GuardedBody {
    fn fail(&mut self, error: Error, message: String) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some((log, index)) = self.log.take() {
            log.update(index, |r| r.error = Some(message));
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.scrub.as_ref().is_some_and(|s| s.ended) {
            return Poll::Ready(None);
        }
        loop {
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            let frame = match polled {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    return match this.scrub.as_mut() {
                        Some(scrub) => {
                            let rest = scrub.finish();
                            if rest.is_empty() {
                                Poll::Ready(None)
                            } else {
                                Poll::Ready(Some(Ok(Frame::data(rest))))
                            }
                        }
                        None => Poll::Ready(None),
                    };
                }
                other => return this.not_data(other, cx),
            };
            this.timer = None;
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            this.received += data.len() as u64;
            if this.received > this.limit {
                let limit = this.limit;
                return this.fail(
                    Error::HttpResponseBodySize(Some(limit)),
                    format!(
                        "the response body is larger than the {} bytes this step may read (raise it with http = {{ allow = [...], max-response = \"...\" }})",
                        limit
                    ),
                );
            }
            let Some(scrub) = this.scrub.as_mut() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            let ready = scrub.feed(data);
            if !ready.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(ready))));
            }
            // All of it held back: read on.
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.scrub {
            // Held-back bytes are still to come until `finish`.
            Some(scrub) => scrub.ended,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.scrub {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

impl GuardedBody {
    /// An error, the end, or a wait for the next chunk (with the pause timer).
    fn not_data(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match polled {
            Poll::Ready(Some(Err(error))) => {
                let message = format!("the response body failed: {error}");
                self.fail(Error::from(error), message)
            }
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => {
                let between = self.between;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                if timer.as_mut().poll(cx).is_ready() {
                    let message = format!(
                        "timed out: the response body paused for more than {}",
                        humantime::format_duration(between)
                    );
                    return self.fail(Error::ConnectionReadTimeout, message);
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_swapped_everywhere_and_only_where_found() {
        assert_eq!(
            swap_bytes(b"{\"key\":\"PH\",\"again\":\"PH\"}", b"PH", b"sk_1"),
            Some(b"{\"key\":\"sk_1\",\"again\":\"sk_1\"}".to_vec())
        );
        assert_eq!(swap_bytes(b"nothing", b"PH", b"sk_1"), None);
        assert_eq!(swap_bytes(b"P", b"PH", b"sk_1"), None);
    }

    #[test]
    fn an_echoed_secret_is_put_back_as_its_placeholder_even_split_across_chunks() {
        let bound = vec![("PLACEHOLDER".to_string(), "sk_live_42".to_string())];
        let mut echo = Echo::new(bound);
        let mut out = Vec::new();
        for chunk in [
            &b"{\"auth\": \"Bearer sk_"[..],
            b"live",
            b"_42\", \"again\": \"sk_live_42\"}",
        ] {
            out.extend_from_slice(&echo.feed(chunk));
        }
        out.extend_from_slice(&echo.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"auth\": \"Bearer PLACEHOLDER\", \"again\": \"PLACEHOLDER\"}"
        );
    }

    #[test]
    fn the_trace_url_has_no_query_and_no_credentials() {
        let uri: http::Uri = "https://user:pw@api.pay.example/v1?x=1".parse().unwrap();
        assert_eq!(trace_url(&uri), "https://api.pay.example/v1");
    }

    #[test]
    fn the_trace_url_has_no_query() {
        let uri: http::Uri = "https://api.pay.example:8443/v1/charges?token=abc"
            .parse()
            .unwrap();
        assert_eq!(trace_url(&uri), "https://api.pay.example:8443/v1/charges");
    }

    #[test]
    fn a_denied_destination_gets_the_pattern_that_allows_it() {
        assert_eq!(
            destination_pattern(Scheme::Https, "api.pay.example", 443, false),
            "https://api.pay.example"
        );
        assert_eq!(
            destination_pattern(Scheme::Http, "127.0.0.1", 8080, true),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            destination_pattern(Scheme::Http, "::1", 8080, true),
            "http://[::1]:8080"
        );
    }
}
