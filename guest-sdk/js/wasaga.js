// wasaga: write Wasaga workflow steps in JavaScript.
//
// A step is two functions over plain JSON values:
//
//   import { createStep, StepResponse, InvalidData } from "./wasaga.js";
//
//   export const { invoke, compensate } = createStep(
//     (input, ctx) => {
//       if (input.name.length < 2) throw new InvalidData("a brand name needs at least 2 characters", { permanent: true });
//       const brand = ctx.entities("brand").create({ name: input.name });
//       return new StepResponse(brand, brand.id);
//     },
//     (brandId, ctx) => { if (brandId != null) ctx.entities("brand").delete(brandId); },
//   );
//
// `build.mjs` makes a component of the world `step` (wit/step.wit) with a
// JavaScript engine inside. The API mirrors the Rust and Python SDKs: a
// manifest cannot tell which language a step is written in.

import { resolve } from "wasaga:step/container@0.1.0";
import { log as hostLog } from "wasaga:step/log@0.1.0";
import { placeholder } from "wasaga:step/secrets@0.1.0";
// http.js (SpiderMonkey) or http-unavailable.js (QuickJS), chosen by build.mjs.
import { Http, Response } from "wasaga-http";

export { Http, Response };

const UNSET = Symbol("unset");

/** A step failure: a kind, a message, whether retrying can help, and optional compensation data. */
export class StepError extends Error {
  constructor(message, { permanent = false, compensation = UNSET, kind } = {}) {
    super(message);
    this.kind = kind ?? new.target.kind ?? "unknown";
    this.permanent = permanent;
    this.compensation = compensation;
  }
}
const kinds = {
  InvalidData: "invalid-data", InvalidArgument: "invalid-argument", NotFound: "not-found", NotAllowed: "not-allowed",
  Unauthorized: "unauthorized", Forbidden: "forbidden", Conflict: "conflict", Duplicate: "duplicate",
  UnexpectedState: "unexpected-state", DatabaseError: "database", UnknownError: "unknown",
};
const makeKind = (kind) => class extends StepError { static kind = kind; };
export const InvalidData = makeKind(kinds.InvalidData);
export const InvalidArgument = makeKind(kinds.InvalidArgument);
export const NotFound = makeKind(kinds.NotFound);
export const NotAllowed = makeKind(kinds.NotAllowed);
export const Unauthorized = makeKind(kinds.Unauthorized);
export const Forbidden = makeKind(kinds.Forbidden);
export const Conflict = makeKind(kinds.Conflict);
export const Duplicate = makeKind(kinds.Duplicate);
export const UnexpectedState = makeKind(kinds.UnexpectedState);
export const DatabaseError = makeKind(kinds.DatabaseError);
export const UnknownError = makeKind(kinds.UnknownError);
const classes = {
  "invalid-data": InvalidData, "invalid-argument": InvalidArgument, "not-found": NotFound, "not-allowed": NotAllowed,
  unauthorized: Unauthorized, forbidden: Forbidden, conflict: Conflict, duplicate: Duplicate,
  "unexpected-state": UnexpectedState, database: DatabaseError, unknown: UnknownError,
};

/** What a successful invoke returns (Medusa's StepResponse): an output, and other data for compensate if given. */
export class StepResponse {
  constructor(output = null, compensation = UNSET) {
    this.output = output;
    this.compensation = compensation;
    this.skipped = false;
  }
  /** The step chose not to run: its `as` name is bound to null and it is not compensated. */
  static skip() {
    const response = new StepResponse();
    response.skipped = true;
    return response;
  }
}

const toWitError = (error) => ({
  kind: error.kind,
  message: error.message,
  permanent: error.permanent,
  compensationData: error.compensation === UNSET ? undefined : JSON.stringify(error.compensation),
});

const fromWitError = (payload) => {
  const Kind = classes[payload.kind] ?? UnknownError;
  const compensation = payload.compensationData === undefined ? UNSET : JSON.parse(payload.compensationData);
  return new Kind(payload.message, { permanent: payload.permanent, compensation });
};

/** Calls a capability import; its error is thrown as a StepError. */
const call = (fn) => {
  try {
    return fn();
  } catch (error) {
    if (error && error.payload && typeof error.payload.kind === "string") throw fromWitError(error.payload);
    throw error;
  }
};

/** A granted entities collection: JSON objects with host-managed id, created_at, updated_at, deleted_at. */
export class Entities {
  constructor(collection) { this.collection = collection; }
  create(data) { return JSON.parse(call(() => this.collection.create(JSON.stringify(data)))); }
  get(id) { return JSON.parse(call(() => this.collection.get(id))); }
  update(id, data) { return JSON.parse(call(() => this.collection.update(id, JSON.stringify(data)))); }
  delete(id) { call(() => this.collection.delete(id)); }
  softDelete(id) { return JSON.parse(call(() => this.collection.softDelete(id))); }
  restore(id) { return JSON.parse(call(() => this.collection.restore(id))); }
  list(filters = {}, { withDeleted = false, limit, offset = 0 } = {}) {
    const query = {
      filters: Object.entries(filters).map(([field, value]) => ({ field, value: JSON.stringify(value) })),
      withDeleted, limit, offset,
    };
    return call(() => this.collection.list(query)).map((row) => JSON.parse(row));
  }
}

/** The run's event emitter. */
export class Events {
  constructor(emitter) { this.emitter = emitter; }
  emit(name, data = null) { call(() => this.emitter.emit(name, JSON.stringify(data))); }
}

/** The [config] keys granted to the step. */
export class Settings {
  constructor(settings) { this.settings = settings; }
  get(key, fallback = null) {
    const value = call(() => this.settings.get(key));
    return value === undefined ? fallback : JSON.parse(value);
  }
}

/** Who is calling and why, and the door to the step's granted capabilities. */
export class StepContext {
  constructor(ctx) {
    this.workflow = ctx.workflow;
    this.runId = ctx.runId;
    this.transactionId = ctx.transactionId;
    this.step = ctx.step;
    this.attempt = ctx.attempt;
    this.idempotencyKey = ctx.idempotencyKey;
    this.metadata = JSON.parse(ctx.metadata);
    this.config = JSON.parse(ctx.config);
  }
  #resolve(name, tag, what) {
    const capability = call(() => resolve(name));
    if (capability.tag !== tag) throw new InvalidArgument(`the capability '${name}' is not ${what}`, { permanent: true });
    return capability.val;
  }
  /** The entities collection granted as `name` (grants = { entities = ["name"] }). */
  entities(name) { return new Entities(this.#resolve(name, "entities", "an entities collection")); }
  /** The run's event emitter (grants = { events = true }). */
  events() { return new Events(this.#resolve("events", "events", "the event emitter")); }
  /** The [config] keys granted to the step (grants = { config = ["key"] }). */
  settings() { return new Settings(this.#resolve("config", "config", "the config reader")); }
  /** Outbound HTTP (grants = { http = ["https://api.example.com"] }); needs --engine spidermonkey. */
  http() { return new Http(); }
  /** A placeholder for the secret `name` (grants = { secrets = ["name"] }): the host swaps the value in on requests to its hosts. */
  secret(name) { return call(() => placeholder(name)); }
}

/** Log lines to the host's log, tagged with the step (no grant needed). */
export const log = {
  trace: (message) => hostLog("trace", String(message)),
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
};

/** A thrown value as the export's error: the WIT `step-error`. */
class ExportError extends Error {
  constructor(payload) {
    super(payload.message);
    this.payload = payload;
  }
}

const failure = (error) => {
  if (error instanceof StepError) return new ExportError(toWitError(error));
  if (error instanceof SyntaxError || error instanceof TypeError) {
    // Input that does not fit the step is invalid data; retrying will not help.
    return new ExportError(toWitError(new InvalidData(`${error.name}: ${error.message}`, { permanent: true })));
  }
  return new ExportError(toWitError(new UnknownError(String(error && error.stack ? error.message : error))));
};

/**
 * Makes the component's exports of `invoke(input, ctx)` and `compensate(data, ctx)`
 * (Medusa's createStep): `export const { invoke, compensate } = createStep(...)`.
 * `invoke` returns a StepResponse or a plain value (the output, also the compensation data);
 * `compensate` receives the compensation data, or null when invoke itself failed.
 */
export function createStep(invokeFn, compensateFn = null) {
  return {
    invoke(input, ctx) {
      let result;
      try {
        result = invokeFn(JSON.parse(input), new StepContext(ctx));
      } catch (error) {
        throw failure(error);
      }
      if (!(result instanceof StepResponse)) result = new StepResponse(result);
      if (result.skipped) return { tag: "skip" };
      return {
        tag: "done",
        val: {
          output: JSON.stringify(result.output ?? null),
          compensationData: result.compensation === UNSET ? undefined : JSON.stringify(result.compensation),
        },
      };
    },
    compensate(data, ctx) {
      if (!compensateFn) return;
      try {
        compensateFn(data === undefined ? null : JSON.parse(data), new StepContext(ctx));
      } catch (error) {
        throw failure(error);
      }
    },
  };
}
