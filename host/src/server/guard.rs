//! What a browser may not do to a server on this machine: start or change
//! runs with a cross-site POST (refused when the browser says it is one) or a
//! form or `text/plain` body (browsers send those without asking, so a POST
//! body must be `application/json`), or read runs
//! through a DNS name rebound to loopback (on a loopback listener only
//! loopback `Host` and `Origin` names are served). Every answer carries the
//! usual security headers. It may not look at a request's body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Refuses what a hostile page could make a browser send; adds security headers.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(&request, state.config.listen) {
        return with_security_headers(refusal);
    }
    with_security_headers(next.run(request).await)
}

fn refuse(status: StatusCode, message: String) -> Option<Response> {
    Some((status, axum::Json(serde_json::json!({ "error": message }))).into_response())
}

fn refusal(request: &Request, listen: SocketAddr) -> Option<Response> {
    let headers = request.headers();
    if listen.ip().is_loopback() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_name(host) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "this server listens on {listen} and answers only requests addressed to it \
                     (Host: localhost or 127.0.0.1), not to '{host}'"
                ),
            );
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let name = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or("");
            if !is_loopback_name(name) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("requests from pages of '{origin}' are not served"),
                );
            }
        }
    }
    // A POST may come from a page only when it is this server's own: the
    // browser says where a request comes from (`Sec-Fetch-Site`), and a
    // page's `Origin` must name exactly this host and port (a page on
    // another local port is "same-site", not same-origin). A bodiless POST
    // needs no preflight, so this is what keeps other pages out.
    if request.method() == Method::POST {
        let site_ok = headers
            .get("sec-fetch-site")
            .is_none_or(|v| matches!(v.as_bytes(), b"same-origin" | b"none"));
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_ok = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_none_or(|origin| {
                origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
                    .is_some_and(|name| name.eq_ignore_ascii_case(host))
            });
        if !site_ok || !origin_ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "a POST from another site's or port's page is not served".to_string(),
            );
        }
    }
    None
}

/// On the routes that take a POST: a body must be `application/json`
/// (browsers send form and `text/plain` bodies cross-site without asking).
/// A POST with no body and no `Content-Type` (a cancel, say) needs neither.
pub async fn json_posts(request: Request, next: Next) -> Response {
    if request.method() == Method::POST {
        let headers = request.headers();
        let content_type = headers.get(header::CONTENT_TYPE);
        let json = content_type
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .and_then(|l| l.to_str().ok())
                .is_some_and(|l| l.trim() != "0");
        if !json && (content_type.is_some() || has_body) {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(serde_json::json!({
                    "error": "a POST body must be `Content-Type: application/json`"
                })),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_name(host_and_port: &str) -> bool {
    let host = if let Some(rest) = host_and_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_and_port
            .rsplit_once(':')
            .map_or(host_and_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn loopback_names() {
        for name in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1",
            "",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
