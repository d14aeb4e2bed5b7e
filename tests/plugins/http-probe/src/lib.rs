//! `http-probe`: makes the HTTP requests its input describes, through the
//! SDK, and returns what came back. Input: one request or
//! `{"requests": [...]}`, each `{"method", "url", "headers", "json", "text",
//! "timeout_ms", "secret": {"name", "in": "header"|"query"|"body"}}`; with
//! `"fail_after": true` the step fails (retryably) after its requests.
//! Compensation makes the requests of `input.compensate`, if any. With
//! `"hold_fields": N` it first holds N `wasi:http` fields at once.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use wasaga_sdk::{StepContext, StepError, StepResponse, Value, json};

#[derive(Deserialize)]
struct Secret {
    name: String,
    #[serde(rename = "in")]
    place: String,
}

#[derive(Deserialize)]
struct Call {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    json: Option<Value>,
    text: Option<String>,
    timeout_ms: Option<u64>,
    secret: Option<Secret>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Many {
        requests: Vec<Call>,
        #[serde(default)]
        fail_after: bool,
        /// Holds this many `wasi:http` fields at once (each in host memory).
        #[serde(default)]
        hold_fields: u32,
        compensate: Option<Vec<Call>>,
    },
    One(Call),
}

fn send(call: &Call, ctx: &StepContext) -> Result<Value, StepError> {
    let mut url = call.url.clone();
    let mut headers = call.headers.clone();
    let mut text = call.text.clone();
    let mut body_json = call.json.clone();
    if let Some(secret) = &call.secret {
        let placeholder = ctx.secret(&secret.name)?;
        match secret.place.as_str() {
            "header" => {
                headers.insert("authorization".into(), format!("Bearer {placeholder}"));
            }
            "query" => {
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!("{url}{sep}key={placeholder}");
            }
            "body" => match &mut body_json {
                Some(Value::Object(map)) => {
                    map.insert("key".into(), Value::String(placeholder));
                }
                _ => text = Some(format!("key={placeholder}")),
            },
            other => return Err(StepError::invalid_data(format!("secret.in '{other}'"))),
        }
    }
    let http = ctx.http();
    let mut request = match call.method.as_str() {
        "POST" => http.post(&url),
        "PUT" => http.put(&url),
        "DELETE" => http.delete(&url),
        _ => http.get(&url),
    };
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    if let Some(body) = &body_json {
        request = request.json(body)?;
    } else if let Some(text) = text {
        request = request.body(text.into_bytes());
    }
    if let Some(ms) = call.timeout_ms {
        request = request.timeout(Duration::from_millis(ms));
    }
    let response = request.send()?;
    Ok(json!({
        "status": response.status,
        "body": response.text(),
        "idempotency_key": response.header("x-seen-idempotency-key"),
    }))
}

fn invoke(input: Input, ctx: &StepContext) -> Result<StepResponse<Value, Value>, StepError> {
    let (calls, fail_after, compensate, hold_fields) = match input {
        Input::One(call) => (vec![call], false, None, 0),
        Input::Many {
            requests,
            fail_after,
            compensate,
            hold_fields,
        } => (requests, fail_after, compensate, hold_fields),
    };
    let held: Vec<wasip2::http::types::Fields> = (0..hold_fields)
        .map(|_| wasip2::http::types::Fields::new())
        .collect();
    let mut results = Vec::new();
    for call in &calls {
        results.push(send(call, ctx)?);
    }
    drop(held);
    if fail_after {
        return Err(StepError::unknown("failing after the requests, as asked"));
    }
    let undo = serde_json::to_value(
        compensate
            .unwrap_or_default()
            .iter()
            .map(
                |c| json!({"method": c.method, "url": c.url, "headers": c.headers, "json": c.json}),
            )
            .collect::<Vec<_>>(),
    )?;
    Ok(StepResponse::with_compensation(Value::Array(results), undo))
}

fn compensate(data: Option<Vec<Call>>, ctx: &StepContext) -> Result<(), StepError> {
    for call in data.unwrap_or_default() {
        send(&call, ctx)?;
    }
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
