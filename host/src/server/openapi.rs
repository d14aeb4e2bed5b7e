//! The OpenAPI 3.1 document of the HTTP API (served at `/openapi.json`),
//! with the served workflows' input schemas.

use serde_json::{Value, json};

use super::AppState;

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn report_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RunReport" } } } })
}

/// The document.
pub fn document(state: &AppState) -> Value {
    let names: Vec<&String> = state.workflows.keys().collect();
    let run_id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" }, "description": "The run's id." });
    let step = json!({ "name": "step", "in": "path", "required": true, "schema": { "type": "string" }, "description": "The waiting step's name in the trace." });
    let security = if state.config.token.is_some() {
        json!([{ "bearer": [] }])
    } else {
        json!([])
    };
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Wasaga",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runs workflows of sandboxed WebAssembly steps (sagas with compensation). Every run is journaled; \
                            a run started with a transaction id that already ran returns its recorded result."
        },
        "security": security,
        "paths": {
            "/workflows/{name}/runs": {
                "post": {
                    "summary": "Start a run of a workflow",
                    "operationId": "startRun",
                    "parameters": [
                        { "name": "name", "in": "path", "required": true, "schema": { "type": "string", "enum": names } },
                        { "name": "wait", "in": "query", "required": false, "schema": { "type": "boolean", "default": true },
                          "description": "Wait for the run's end (up to the server's wait timeout) instead of answering 202 at once." },
                        { "name": "traceparent", "in": "header", "required": false, "schema": { "type": "string" },
                          "description": "The caller's W3C trace context: the run's spans join its trace, and its steps' outbound requests carry it on. A malformed value is ignored (the run starts a trace of its own)." }
                    ],
                    "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StartRun" } } } },
                    "responses": {
                        "200": report_response("The run is done."),
                        "202": { "description": "The run goes on (not waited for, paused, or past the wait timeout): follow Location.",
                                 "headers": { "Location": { "schema": { "type": "string" } } },
                                 "content": { "application/json": { "schema": { "oneOf": [ { "$ref": "#/components/schemas/Accepted" }, { "$ref": "#/components/schemas/RunReport" } ] } } } },
                        "400": { "description": "The body is not valid, or the input breaks the workflow's input-schema (every violation listed).",
                                 "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                        "401": error_response("A token is required."),
                        "404": error_response("No such workflow."),
                        "413": { "description": "The body is larger than the server accepts." },
                        "422": report_response("The run failed and was compensated (reverted), or a compensation failed too (failed); also the recorded result of an earlier run with this transaction id that ended so.")
                    }
                }
            },
            "/runs": {
                "get": {
                    "summary": "List runs, newest first",
                    "operationId": "listRuns",
                    "parameters": [
                        { "name": "status", "in": "query", "schema": { "$ref": "#/components/schemas/RunStatus" } },
                        { "name": "workflow", "in": "query", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } },
                        { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "`next_cursor` of the previous page." }
                    ],
                    "responses": {
                        "200": { "description": "A page of runs.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RunList" } } } },
                        "400": error_response("A bad filter."),
                        "401": error_response("A token is required.")
                    }
                }
            },
            "/runs/{id}": {
                "get": {
                    "summary": "A run's report (every attempt of every call)",
                    "operationId": "getRun",
                    "parameters": [run_id],
                    "responses": { "200": report_response("The run."), "401": error_response("A token is required."), "404": error_response("No such run.") }
                }
            },
            "/runs/{id}/cancel": {
                "post": {
                    "summary": "Cancel a run: compensate what it did",
                    "operationId": "cancelRun",
                    "parameters": [run_id],
                    "responses": {
                        "422": report_response("Cancelled (and compensated)."),
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "409": error_response("Refused: the run failed or is already compensated, or its components changed since it started.")
                    }
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Metrics in Prometheus' text format",
                    "description": "Runs started and finished (by workflow and status), call attempts (by call, action and outcome) and their durations, lease take-overs, and the unfinished runs by status.",
                    "operationId": "metrics",
                    "responses": {
                        "200": { "description": "The metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } },
                        "401": error_response("A token is required.")
                    }
                }
            },
            "/runs/{id}/retry": {
                "post": {
                    "summary": "Retry the compensations of a failed run",
                    "description": "Once the cause is fixed: exactly the compensations that failed are called again, in the same reverse order; the run ends `reverted`, or `failed` again with the new errors.",
                    "operationId": "retryRun",
                    "parameters": [run_id],
                    "responses": {
                        "422": report_response("Retried: the run is reverted, or failed again (its report says which)."),
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "409": error_response("Refused: the run is not failed, or its components changed since it started.")
                    }
                }
            },
            "/runs/{id}/rerun": {
                "post": {
                    "summary": "Run a run again: a new run, linked to it",
                    "description": "A new run of the same workflow, loaded from its manifest as it is now, with the original's input (or the body's) and metadata; its report says `rerun_of`, and the original's lists it in `reruns`.",
                    "operationId": "rerunRun",
                    "parameters": [run_id,
                        { "name": "wait", "in": "query", "required": false, "schema": { "type": "boolean", "default": true },
                          "description": "Wait for the new run's end (up to the server's wait timeout) instead of answering 202 at once." }],
                    "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Rerun" } } } },
                    "responses": {
                        "200": report_response("The new run is done."),
                        "202": { "description": "The new run goes on: follow Location.",
                                 "headers": { "Location": { "schema": { "type": "string" } } },
                                 "content": { "application/json": { "schema": { "oneOf": [ { "$ref": "#/components/schemas/Accepted" }, { "$ref": "#/components/schemas/RunReport" } ] } } } },
                        "400": error_response("The body is not valid."),
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "409": error_response("Refused: the input breaks the workflow's input-schema, or the run's manifest no longer loads or now defines another workflow."),
                        "422": report_response("The new run failed and was compensated (reverted), or a compensation failed too (failed).")
                    }
                }
            },
            "/runs/{id}/events": {
                "get": {
                    "summary": "The run's events, live (Server-Sent Events)",
                    "description": "`record` events (a call started or finished, an event was emitted, compensation started) in order, \
                                    then `status` events; the stream ends with the final status.",
                    "operationId": "runEvents",
                    "parameters": [run_id],
                    "responses": {
                        "200": { "description": "An event stream.", "content": { "text/event-stream": { "schema": { "$ref": "#/components/schemas/RunEvent" } } } },
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "503": error_response("As many event streams are open as --max-event-streams allows.")
                    }
                }
            },
            "/runs/{id}/steps/{step}/success": {
                "post": {
                    "summary": "An async step succeeded: record its output and continue the run",
                    "operationId": "stepSuccess",
                    "parameters": [run_id, step],
                    "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "output": {} } } } } },
                    "responses": {
                        "200": report_response("The run continued to its end."),
                        "202": report_response("The run continued and paused again."),
                        "422": report_response("The run continued and failed."),
                        "400": error_response("A bad body."),
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "409": error_response("The step is not waiting (nothing changed).")
                    }
                }
            },
            "/runs/{id}/steps/{step}/failure": {
                "post": {
                    "summary": "An async step failed: record the error and compensate the run",
                    "operationId": "stepFailure",
                    "parameters": [run_id, step],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error"],
                        "properties": { "error": { "type": "object", "required": ["message"],
                            "properties": { "kind": { "$ref": "#/components/schemas/ErrorKind" }, "message": { "type": "string" },
                                            "compensation_data": {} } } } } } } },
                    "responses": {
                        "422": report_response("The run was compensated."),
                        "400": error_response("A bad body."),
                        "401": error_response("A token is required."),
                        "404": error_response("No such run."),
                        "409": error_response("The step is not waiting (nothing changed).")
                    }
                }
            },
            "/workflows": {
                "get": {
                    "summary": "The served workflows, their input schemas and schedules (with the next tick)",
                    "operationId": "listWorkflows",
                    "responses": { "200": { "description": "The workflows.", "content": { "application/json": { "schema": { "type": "object" } } } },
                                   "401": error_response("A token is required.") }
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness (no token needed)",
                    "operationId": "health",
                    "security": [],
                    "responses": { "200": { "description": "Serving, with the number of event streams open.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["status", "event_streams"],
                        "properties": { "status": { "type": "string" }, "event_streams": { "type": "integer" } } } } } } }
                }
            },
            "/openapi.json": {
                "get": { "summary": "This document", "operationId": "openapi",
                         "responses": { "200": { "description": "OpenAPI 3.1.", "content": { "application/json": { "schema": { "type": "object" } } } },
                                        "401": error_response("A token is required.") } }
            },
            "/": {
                "get": { "summary": "The runs page", "operationId": "page",
                         "responses": { "200": { "description": "HTML.", "content": { "text/html": { "schema": { "type": "string" } } } },
                                        "401": error_response("A token is required.") } }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "string" }, "violations": { "type": "array", "items": { "type": "string" } } } },
                "StartRun": { "type": "object", "additionalProperties": false, "properties": {
                    "input": { "description": "The workflow input (any JSON)." },
                    "transaction_id": { "type": ["string", "null"], "description": "A run with a transaction id that already ran returns its recorded result." },
                    "metadata": { "type": ["object", "null"] } } },
                "Rerun": { "type": "object", "additionalProperties": false, "properties": {
                    "input": { "description": "The new run's input (any JSON); the original's when absent." } } },
                "Accepted": { "type": "object", "required": ["run", "status", "location"], "properties": {
                    "run": { "type": "string" }, "status": { "enum": ["running", "queued"] }, "location": { "type": "string" } } },
                "RunStatus": { "type": "string", "enum": ["running", "waiting", "compensating", "queued", "done", "reverted", "failed", "cancelled"] },
                "ErrorKind": { "type": "string", "enum": [
                    "invalid-data", "invalid-argument", "not-found", "not-allowed", "unauthorized", "forbidden",
                    "conflict", "duplicate", "unexpected-state", "database", "unknown", "timeout", "trap",
                    "out-of-memory", "invalid-output", "expression", "cancelled", "host"] },
                "RunEvent": { "type": "object", "required": ["data"],
                    "description": "One Server-Sent Event: `record` (a journal record: a call started or finished, an event emitted) or `status` (the run's status changed; the stream ends at a final one).",
                    "properties": {
                        "event": { "type": "string", "enum": ["record", "status"] },
                        "id": { "type": "string", "description": "The record's sequence number (resume with Last-Event-ID)." },
                        "data": { "type": "string", "contentMediaType": "application/json", "description": "The record or the status, as JSON." } } },
                "StepError": { "type": "object", "required": ["kind", "message", "permanent"], "properties": {
                    "kind": { "type": "string" }, "message": { "type": "string" }, "permanent": { "type": "boolean" }, "compensation_data": {} } },
                "RunError": { "type": "object", "required": ["kind", "message", "permanent"], "properties": {
                    "step": { "type": ["string", "null"] }, "kind": { "type": "string" }, "message": { "type": "string" },
                    "permanent": { "type": "boolean" },
                    "compensation_failures": { "type": "array", "items": { "type": "object" } } } },
                "TraceEntry": { "type": "object", "required": ["step", "action", "attempt", "outcome", "started_ms", "duration_ms"], "properties": {
                    "step": { "type": "string" }, "node": { "type": "string" },
                    "action": { "type": "string", "enum": ["invoke", "compensate"] },
                    "attempt": { "type": "integer", "minimum": 1 },
                    "outcome": { "type": "string", "enum": ["ok", "error", "skipped"] },
                    "output": { "description": "What an invoke returned (an async step's: its answer's); absent for a compensation, a failure or a skip." },
                    "input": {}, "error": { "oneOf": [ { "$ref": "#/components/schemas/StepError" }, { "type": "null" } ] },
                    "started_ms": { "type": "number" }, "duration_ms": { "type": "number" },
                    "requests": { "type": "array", "items": { "$ref": "#/components/schemas/OutboundRequest" } } } },
                "OutboundRequest": { "type": "object", "required": ["method", "url", "duration_ms"], "properties": {
                    "method": { "type": "string" }, "url": { "type": "string", "description": "scheme://host[:port]/path, without the query string" },
                    "status": { "type": "integer" }, "error": { "type": "string" }, "duration_ms": { "type": "number" },
                    "started_at": { "type": "string", "description": "When it was sent (RFC 3339, microseconds)." } } },
                "RunReport": { "type": "object", "required": ["run", "workflow", "transaction_id", "status", "output", "error", "trace"], "properties": {
                    "run": { "type": "string" }, "workflow": { "type": "string" }, "transaction_id": { "type": "string" },
                    "status": { "$ref": "#/components/schemas/RunStatus" }, "partial": { "type": "boolean" },
                    "output": {}, "error": { "oneOf": [ { "$ref": "#/components/schemas/RunError" }, { "type": "null" } ] },
                    "errors": { "type": "array", "items": { "$ref": "#/components/schemas/RunError" } },
                    "trace": { "type": "array", "items": { "$ref": "#/components/schemas/TraceEntry" } },
                    "events": { "type": "array", "items": { "type": "object" } },
                    "duration_ms": { "type": "number" },
                    "wake_at": { "type": "string", "description": "When a waiting run wakes (RFC 3339)." },
                    "rerun_of": { "type": "string" }, "reruns": { "type": "array", "items": { "type": "string" } },
                    "tick": { "type": "string", "description": "The schedule's tick the run was started for (RFC 3339)." },
                    "trace_id": { "type": "string", "description": "The OpenTelemetry trace of its spans (32 hex digits), when it has one." } } },
                "RunSummary": { "type": "object", "properties": {
                    "run": { "type": "string" }, "workflow": { "type": "string" }, "transaction_id": { "type": "string" },
                    "status": { "$ref": "#/components/schemas/RunStatus" }, "partial": { "type": "boolean" },
                    "created_at": { "type": "integer", "description": "Unix ms." }, "finished_at": { "type": ["integer", "null"] },
                    "duration_ms": { "type": "integer" },
                    "tick": { "type": ["string", "null"], "description": "The schedule's tick the run was started for (RFC 3339); null for runs someone started." } } },
                "RunList": { "type": "object", "required": ["runs"], "properties": {
                    "runs": { "type": "array", "items": { "$ref": "#/components/schemas/RunSummary" } },
                    "next_cursor": { "type": ["string", "null"] } } }
            }
        }
    });
    add_guard_answers(&mut document);
    document
}

/// What the request guard (`guard.rs`) may answer on every route: 403 for a
/// foreign `Host` or `Origin` on a loopback listener (and a cross-site POST),
/// and on every POST 415 for a body that is not `application/json`.
fn add_guard_answers(document: &mut Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for operations in paths.values_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            responses.insert(
                "403".into(),
                error_response(
                    "The request names a host or origin this loopback server does not serve, or is a cross-site POST.",
                ),
            );
            if method == "post" {
                responses.insert(
                    "415".into(),
                    error_response("The request has a body that is not `application/json`."),
                );
            }
        }
    }
}
