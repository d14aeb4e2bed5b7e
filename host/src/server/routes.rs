//! The HTTP routes: start runs, read them, cancel and retry them, answer async steps,
//! stream their events; list workflows; health; the OpenAPI document; the page.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::live::Update;
use crate::durable::{Answer, DurableError, Started};
use crate::journal::{JournalError, RecordKind, RunFilter, RunRecord};
use crate::json::Json;
use crate::saga::{CallRecord, RunReport, RunRequest, RunStatus};

/// Every route.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/workflows", get(workflows))
        .route("/workflows/{name}/runs", post(start_run))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/retry", post(retry_run))
        .route("/runs/{id}/rerun", post(rerun_run))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/steps/{step}/success", post(step_success))
        .route("/runs/{id}/steps/{step}/failure", post(step_failure))
        // Only on routes that exist: a POST elsewhere is a 404 or 405.
        .route_layer(axum::middleware::from_fn(super::guard::json_posts))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::guard::guard,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A query string that does not parse: a JSON 400 like every other error
/// (axum's own answer is `text/plain`).
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// An error answer: a status and `{"error": message, ...}`.
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<JournalError> for ApiError {
    fn from(err: JournalError) -> ApiError {
        match err {
            JournalError::UnknownRun(run) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("no run '{run}'"))
            }
            other => {
                tracing::error!("{other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the journal failed; see the server's log",
                )
            }
        }
    }
}

impl From<DurableError> for ApiError {
    fn from(err: DurableError) -> ApiError {
        match err {
            DurableError::Journal(e) => e.into(),
            DurableError::Refused(message) | DurableError::ChangedComponents(message) => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            // The run's manifest (on disk now, or as pinned) no longer
            // loads: a state to fix, not a server failure.
            manifest @ DurableError::Manifest { .. } => {
                ApiError::new(StatusCode::CONFLICT, manifest.to_string())
            }
            other => {
                tracing::error!("{other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the run could not be executed; see the server's log",
                )
            }
        }
    }
}

/// The status code of a run's report.
fn report_status(report: &RunReport) -> StatusCode {
    match report.status {
        RunStatus::Done => StatusCode::OK,
        RunStatus::Reverted | RunStatus::Failed | RunStatus::Cancelled => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        RunStatus::Running | RunStatus::Waiting | RunStatus::Compensating | RunStatus::Queued => {
            StatusCode::ACCEPTED
        }
    }
}

fn report_response(report: &RunReport) -> Response {
    let mut response = (report_status(report), axum::Json(report)).into_response();
    if response.status() == StatusCode::ACCEPTED
        && let Ok(location) = HeaderValue::from_str(&format!("/runs/{}", report.run))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page/index.html"))
}

/// `GET /metrics`, in Prometheus' text format.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let state = state.clone();
    let text = tokio::task::spawn_blocking(move || {
        state
            .metrics
            .render(state.host.journal().as_ref(), state.host.takeovers())
    })
    .await
    .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "event_streams": state.event_streams.load(Ordering::Relaxed),
    }))
}

/// Counts an open event stream while it lives.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// A slot, unless `max` streams are open already.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot(count.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn openapi(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(super::openapi::document(&state))
}

async fn workflows(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    let list: Vec<Value> = state
        .workflows
        .iter()
        .map(|(name, served)| {
            let manifest = &served.workflow.manifest;
            let schema = manifest.input_schema.as_ref().and_then(|s| {
                std::fs::read_to_string(s.path())
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            });
            let schedule = manifest.schedule.as_ref().map(|schedule| {
                json!({
                    "cron": schedule.pattern,
                    "timezone": schedule.timezone.name(),
                    "overlap": schedule.overlap.as_str(),
                    "next_tick": schedule.next_after(crate::journal::now_ms()).map(crate::saga::rfc3339),
                })
            });
            json!({
                "name": name,
                "steps": manifest.workflow.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                "input_schema": schema,
                "runs": format!("/workflows/{name}/runs"),
                "schedule": schedule,
            })
        })
        .collect();
    axum::Json(json!({ "workflows": list }))
}

#[derive(Deserialize, Default)]
struct WaitQuery {
    wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// Kept as text and checked by `Json::parse`, like every JSON that
    /// enters (serde_json alone accepts nesting a later read refuses).
    input: Option<Box<serde_json::value::RawValue>>,
    transaction_id: Option<String>,
    metadata: Option<Box<serde_json::value::RawValue>>,
}

/// `POST /workflows/{name}/runs`.
async fn start_run(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let Some(served) = state.workflows.get(&name) else {
        let names: Vec<&String> = state.workflows.keys().collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            body: json!({ "error": format!("no workflow '{name}'"), "workflows": names }),
        });
    };
    let body: StartBody = if body.is_empty() {
        StartBody {
            input: None,
            transaction_id: None,
            metadata: None,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"input\": ..., \"transaction_id\"?: \"...\"}}: {e}"),
            )
        })?
    };
    // No input (an empty body, or `{}`) is `{}`, the same either way.
    let input = match &body.input {
        None => Json::from_value(json!({})),
        Some(raw) => Json::parse(raw.get().to_string())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the input: {e}")))?,
    };
    if let Some(schema) = &served.workflow.manifest.input_schema {
        let violations = schema.violations(input.value());
        if !violations.is_empty() {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "error": "the input does not match the workflow's input-schema", "violations": violations }),
            });
        }
    }
    let mut request = RunRequest::new(input);
    if let Some(tx) = body.transaction_id {
        request.transaction_id = tx;
    }
    // The caller's trace, when it sends one (W3C Trace Context); a bad
    // header starts a trace of the run's own, as the spec says.
    request.trace_context = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(crate::telemetry::TraceContext::from_traceparent);
    if let Some(raw) = &body.metadata {
        let metadata = Json::parse(raw.get().to_string())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the metadata: {e}")))?;
        if !metadata.value().is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "metadata must be a JSON object",
            ));
        }
        request.metadata = metadata;
    }
    // Begun and launched in a task of its own: its start waits for a
    // commit shared with other runs' writes, and a caller who hangs up
    // meanwhile must not leave a recorded run that nothing executes.
    let begin = {
        let (state, workflow) = (state.clone(), served.workflow.clone());
        let extension_dirs = served.extension_dirs.clone();
        tokio::spawn(async move {
            let begun = state
                .host
                .begin(&workflow, &extension_dirs, &request)
                .await?;
            let run_id = begun.run_id().to_string();
            if matches!(
                begun,
                crate::durable::Begun::Fresh(..) | crate::durable::Begun::Queued(..)
            ) {
                state.metrics.run_started(&run_id, &name);
            }
            let status = accepted_status(&begun);
            let task = launch(&state, workflow, begun, request);
            Ok::<_, DurableError>((run_id, status, task))
        })
    };
    let (run_id, status, task) = begin.await.map_err(|join| {
        tracing::error!("a run's start crashed: {join}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run's start crashed; see the server's log",
        )
    })??;
    answer_when_done(&state, (&run_id, status), task, query.wait.unwrap_or(true)).await
}

/// Executes a recorded run in a task of its own (counted as active while
/// it runs), as a run started over HTTP is.
pub(super) fn launch(
    state: &Arc<AppState>,
    workflow: Arc<crate::workflow::LoadedWorkflow>,
    begun: crate::durable::Begun,
    request: RunRequest,
) -> tokio::task::JoinHandle<Result<Started, DurableError>> {
    let task_state = state.clone();
    state.active.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let result = task_state
            .host
            .complete(&workflow, begun, request, true)
            .await;
        // A run that reached a background step goes on here, after the answer.
        if let Ok(Started::Ran(report)) = &result
            && report.status == RunStatus::Running
        {
            let _ = task_state.host.resume(&report.run).await;
        }
        task_state.active.fetch_sub(1, Ordering::SeqCst);
        result
    })
}

/// What a `202` for a run just recorded says it is.
fn accepted_status(begun: &crate::durable::Begun) -> RunStatus {
    match begun {
        crate::durable::Begun::Queued(..) => RunStatus::Queued,
        _ => RunStatus::Running,
    }
}

/// The run's report once `task` ends, or `202` with its location (and
/// `status`) if it takes longer than the wait timeout (or the caller said
/// `wait=false`).
async fn answer_when_done(
    state: &AppState,
    (run_id, status): (&str, RunStatus),
    task: tokio::task::JoinHandle<Result<Started, DurableError>>,
    wait: bool,
) -> Result<Response, ApiError> {
    if !wait {
        return Ok(accepted(run_id, status));
    }
    match tokio::time::timeout(state.config.wait_timeout, task).await {
        Ok(Ok(Ok(started))) => Ok(report_response(&started.report())),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(join)) => {
            tracing::error!("a run task crashed: {join}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the run crashed; see the server's log",
            ))
        }
        // Still running: the caller follows the Location.
        Err(_) => Ok(accepted(run_id, status)),
    }
}

fn accepted(run: &str, status: RunStatus) -> Response {
    let location = format!("/runs/{run}");
    let body = axum::Json(json!({ "run": run, "status": status, "location": location }));
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    workflow: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn summary(run: &RunRecord) -> Value {
    json!({
        "run": run.id,
        "workflow": run.workflow,
        "transaction_id": run.transaction_id,
        "status": run.status,
        "partial": run.partial,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "duration_ms": run.finished_at.unwrap_or(run.updated_at) - run.created_at,
        "tick": run.tick.map(crate::saga::rfc3339),
    })
}

/// `GET /runs`.
async fn list_runs(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let status = match query.status.as_deref() {
        Some(name) => Some(RunStatus::from_name(name).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("'{name}' is not a status (running, waiting, compensating, queued, done, reverted, failed, cancelled)"))
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be from 1 to 500, not {limit}"),
        ));
    }
    let filter = RunFilter {
        status,
        workflow: query.workflow.filter(|w| !w.is_empty()),
        limit: Some(limit + 1),
        before: query.cursor.filter(|c| !c.is_empty()),
        rerun_of: None,
    };
    let mut runs = state.host.journal().list(&filter)?;
    let next = (runs.len() > limit).then(|| {
        runs.truncate(limit);
        runs.last().map(|r| r.id.clone())
    });
    let list: Vec<Value> = runs.iter().map(summary).collect();
    Ok(axum::Json(json!({ "runs": list, "next_cursor": next.flatten() })).into_response())
}

/// `GET /runs/{id}`.
async fn get_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = state.host.report(&id)?;
    Ok(axum::Json(report).into_response())
}

/// `POST /runs/{id}/cancel`.
async fn cancel_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = state.host.cancel(&id).await?;
    Ok(report_response(&report))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    /// Checked by `Json::parse`, like every JSON that enters.
    input: Option<Box<serde_json::value::RawValue>>,
}

/// `POST /runs/{id}/rerun`: a new run like this one (its input unless the
/// body gives another), linked to it.
async fn rerun_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let body: RerunBody = if body.is_empty() {
        RerunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"input\"?: ...}}: {e}"),
            )
        })?
    };
    let input = body
        .input
        .map(|raw| Json::parse(raw.get().to_string()))
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the input: {e}")))?;
    let (workflow, begun, request) = state.host.begin_rerun(&id, input)?;
    let run_id = begun.run_id().to_string();
    state
        .metrics
        .run_started(&run_id, &workflow.manifest.workflow.name);
    let status = accepted_status(&begun);
    let task = launch(&state, workflow, begun, request);
    let host = state.host.clone();
    let linked = tokio::spawn(async move {
        match task.await {
            // The journal's report carries the link to the original.
            Ok(started) => Ok(Started::Recorded(host.report(&started?.report().run)?)),
            Err(crashed) => std::panic::resume_unwind(crashed.into_panic()),
        }
    });
    answer_when_done(
        &state,
        (&run_id, status),
        linked,
        query.wait.unwrap_or(true),
    )
    .await
}

/// `POST /runs/{id}/retry`: retry a failed run's failed compensations.
async fn retry_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = state.host.retry(&id).await?;
    Ok(report_response(&report))
}

#[derive(Deserialize, Default)]
struct SuccessBody {
    /// Checked by `Json::parse`, like every JSON that enters.
    output: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
struct FailureBody {
    error: Value,
}

/// `POST /runs/{id}/steps/{step}/success`.
async fn step_success(
    State(state): State<Arc<AppState>>,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: SuccessBody = if body.is_empty() {
        SuccessBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"output\": ...}}: {e}"),
            )
        })?
    };
    let output = match &body.output {
        None => Json::null(),
        Some(raw) => Json::parse(raw.get().to_string())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the output: {e}")))?,
    };
    let report = state
        .host
        .answer(&id, &step, Answer::Succeed(output))
        .await?;
    Ok(report_response(&report))
}

/// `POST /runs/{id}/steps/{step}/failure`.
async fn step_failure(
    State(state): State<Arc<AppState>>,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: FailureBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not {{\"error\": {{\"kind\"?: ..., \"message\": ...}}}}: {e}"),
        )
    })?;
    let error = crate::durable::parse_answer_error(&body.error.to_string())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let report = state.host.answer(&id, &step, Answer::Fail(error)).await?;
    Ok(report_response(&report))
}

/// A journal record as a live event.
fn record_event(seq: u64, kind: &RecordKind) -> SseEvent {
    let data = match kind {
        RecordKind::Started {
            node,
            step,
            action,
            attempt,
            ..
        } => {
            json!({"seq": seq, "kind": "started", "node": node, "step": step, "action": action, "attempt": attempt})
        }
        RecordKind::Finished {
            node,
            action,
            attempt,
            record,
        } => {
            let outcome = record.outcome_name();
            let error = match record {
                CallRecord::Failed { error, .. } => Some(error),
                _ => None,
            };
            json!({"seq": seq, "kind": "finished", "node": node, "action": action, "attempt": attempt, "outcome": outcome, "error": error})
        }
        RecordKind::Event(event) => {
            json!({"seq": seq, "kind": "event", "name": event.name, "data": event.data, "step": event.step})
        }
        RecordKind::Compensating(error) => {
            json!({"seq": seq, "kind": "compensating", "error": error})
        }
        RecordKind::Retry { compensations } => {
            json!({"seq": seq, "kind": "retry", "compensations": compensations})
        }
        RecordKind::Requests {
            node,
            action,
            attempt,
            requests,
        } => {
            json!({"seq": seq, "kind": "requests", "node": node, "action": action, "attempt": attempt, "requests": requests})
        }
    };
    SseEvent::default()
        .event("record")
        .id(seq.to_string())
        .data(data.to_string())
}

fn status_event(status: RunStatus) -> SseEvent {
    SseEvent::default()
        .event("status")
        .data(json!({ "status": status }).to_string())
}

/// `GET /runs/{id}/events`: the run's records so far, then live ones, then
/// its final status (the stream ends there).
async fn run_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let slot = StreamSlot::take(&state.event_streams, state.config.max_event_streams)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} event streams are open, the most this server allows (--max-event-streams); try again later",
                    state.config.max_event_streams
                ),
            )
        })?;
    // Subscribe before reading the journal: nothing falls between the two.
    let mut updates = state.live.subscribe();
    let record = state.host.journal().run(&id)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(256);
    let journal = state.host.journal().clone();
    tokio::spawn(async move {
        let _slot = slot;
        let mut last = 0u64;
        let send_since = |last: &mut u64| -> Vec<SseEvent> {
            let mut events = Vec::new();
            if let Ok(records) = journal.records(&id) {
                let from = *last;
                for entry in records.into_iter().filter(|r| r.seq > from) {
                    *last = entry.seq;
                    events.push(record_event(entry.seq, &entry.kind));
                }
            }
            events
        };
        for event in send_since(&mut last) {
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if sender.send(Ok(status_event(record.status))).await.is_err() || record.status.is_final() {
            return;
        }
        // When the journal was last read: a run executing on another host
        // (several hosts on one database) is seen only there.
        let mut polled = std::time::Instant::now();
        loop {
            // A client that went away ends the task at once (it used to
            // live on, waking every second, until the run ended).
            let update = tokio::select! {
                _ = sender.closed() => return,
                update = tokio::time::timeout(Duration::from_secs(1), updates.recv()) => update,
            };
            let update = match update {
                Ok(Ok(update)) if update.run() == id => Some(update),
                // Other runs' updates: the journal is still read every second.
                Ok(Ok(_)) if polled.elapsed() < Duration::from_secs(1) => continue,
                Ok(Ok(_))
                | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_)))
                | Err(_) => None,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
            };
            let Some(update) = update else {
                // Missed updates, a quiet second, or a second of other runs:
                // catch up from the journal.
                polled = std::time::Instant::now();
                for event in send_since(&mut last) {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                match journal.run(&id) {
                    Ok(run) if run.status.is_final() => {
                        let _ = sender.send(Ok(status_event(run.status))).await;
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                }
            };
            let events = match update {
                Update::Records { records, .. } => {
                    let from = last;
                    let mut events = Vec::new();
                    for (seq, kind) in records.iter().filter(|(seq, _)| *seq > from) {
                        last = *seq;
                        events.push(record_event(*seq, kind));
                    }
                    events
                }
                Update::Status { status, .. } => {
                    // Records committed just before the status arrive first.
                    let mut events = send_since(&mut last);
                    events.push(status_event(status));
                    if status.is_final() {
                        for event in events {
                            let _ = sender.send(Ok(event)).await;
                        }
                        return;
                    }
                    events
                }
            };
            for event in events {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(
        Sse::new(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .keep_alive(KeepAlive::default()),
    )
}
