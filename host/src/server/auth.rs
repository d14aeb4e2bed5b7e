//! Bearer-token authentication: every route but `/healthz` needs
//! `Authorization: Bearer <token>` (or `?token=` for the page and its live
//! event stream, which a browser cannot give a header).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Rejects a request without the right token (when one is configured).
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.config.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Only the page and its event stream take the token in the query: a
    // query string ends up in logs and histories, a header does not.
    let from_query = takes_query_token(&request)
        .then(|| request.uri().query())
        .flatten()
        .and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .map(|t| t.to_string())
        });
    let given = from_header.map(str::to_string).or(from_query);
    if given
        .as_deref()
        .is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    {
        return next.run(request).await;
    }
    let body = axum::Json(serde_json::json!({
        "error": "unauthorized: send `Authorization: Bearer <token>` (the token given to `host serve --token`)"
    }));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        body,
    )
        .into_response()
}

/// Whether a request may carry the token as `?token=`: `GET /` (the page)
/// and `GET /runs/{id}/events` (its live stream: `EventSource` sends no headers).
fn takes_query_token(request: &Request) -> bool {
    let path = request.uri().path();
    let is_stream = path
        .strip_prefix("/runs/")
        .and_then(|rest| rest.strip_suffix("/events"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    request.method() == axum::http::Method::GET && (path == "/" || is_stream)
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
