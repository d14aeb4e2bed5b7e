// Outbound HTTP for JavaScript steps, over the standard wasi:http/outgoing-handler
// (the world `step-http`). build.mjs bundles it for the SpiderMonkey engine;
// QuickJS builds get http-unavailable.js instead (componentize-qjs cannot yet
// pre-initialize a component that imports wasi:http/types).
import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingRequest, OutgoingBody, IncomingBody, RequestOptions, httpErrorCode } from "wasi:http/types@0.2.12";
import { InvalidArgument, InvalidData, NotAllowed, UnknownError } from "./wasaga.js";

const UNSET = undefined;

/** An HTTP response: status, headers (names in lowercase), body (Uint8Array). */
export class Response {
  constructor(status, headers, body) { this.status = status; this.headers = headers; this.body = body; }
  get ok() { return this.status >= 200 && this.status < 300; }
  text() { return utf8Decode(this.body); }
  json() {
    try { return JSON.parse(this.text()); } catch (error) {
      throw new InvalidData(`the response (${this.status}) is not the JSON expected: ${error.message}`);
    }
  }
}

// QuickJS has no TextEncoder: UTF-8 by hand (the bodies steps send are small).
const utf8Encode = (text) => {
  const bytes = [];
  for (const ch of text) {
    let c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
};
const utf8Decode = (bytes) => {
  let out = "";
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    let c, n;
    if (b < 0x80) { c = b; n = 1; } else if (b < 0xe0) { c = b & 31; n = 2; } else if (b < 0xf0) { c = b & 15; n = 3; } else { c = b & 7; n = 4; }
    for (let k = 1; k < n; k++) c = (c << 6) | (bytes[i + k] & 63);
    out += String.fromCodePoint(c);
    i += n;
  }
  return out;
};

const splitUrl = (url) => {
  const match = /^(https?):\/\/([^/?#]+)([^#]*)/i.exec(url);
  if (!match) throw new InvalidArgument(`'${url}' is not a URL a step can request: use http:// or https://`, { permanent: true });
  let path = match[3] || "/";
  if (path.startsWith("?")) path = "/" + path;
  return { scheme: match[1].toLowerCase(), authority: match[2], path };
};

const httpError = (shown, code) => {
  const tag = code && code.tag;
  if (tag === "HTTP-request-denied") {
    return new NotAllowed(`${shown} was denied: the step is not granted that host (the step's log and the run's trace show the grant to add)`, { permanent: true });
  }
  if (tag === "destination-IP-prohibited") {
    return new NotAllowed(`${shown} was denied: it goes to a private address its grant does not name`, { permanent: true });
  }
  if (tag === "HTTP-response-body-size") return new InvalidData(`${shown}: the response is too large`, { permanent: true });
  if (tag && /timeout/i.test(tag)) return new UnknownError(`${shown} timed out`);
  if (tag && tag.startsWith("TLS")) return new UnknownError(`${shown}: TLS failed (${tag})`);
  if (tag === "internal-error") return new UnknownError(`${shown} failed: ${code.val ?? ""}`, { permanent: true });
  return new UnknownError(`${shown}: the connection failed (${tag ?? code})`);
};

/**
 * Outbound HTTP through the standard wasi:http/outgoing-handler, to the hosts the step's
 * `http` grant allows. Each request carries `Idempotency-Key: <idempotencyKey>:<n>` unless set.
 */
export class Http {
  get(url, options) { return this.request("GET", url, options); }
  post(url, options) { return this.request("POST", url, options); }
  put(url, options) { return this.request("PUT", url, options); }
  patch(url, options) { return this.request("PATCH", url, options); }
  delete(url, options) { return this.request("DELETE", url, options); }
  /** Sends a request and reads the whole response; `json` sets a JSON body, `timeout` (ms) the wait for it to start. */
  request(method, url, { headers = {}, json = UNSET, body = null, timeout = null } = {}) {
    const { scheme, authority, path } = splitUrl(url);
    const shown = `${method} ${scheme}://${authority}${path.split("?")[0]}`;
    const all = {};
    for (const [name, value] of Object.entries(headers)) all[name.toLowerCase()] = String(value);
    if (json !== UNSET) {
      body = JSON.stringify(json);
      all["content-type"] ??= "application/json";
    }
    const bytes = body === null ? null : typeof body === "string" ? utf8Encode(body) : body;
    if (bytes !== null) all["content-length"] = String(bytes.length);
    const fields = Fields.fromList(Object.entries(all).map(([name, value]) => [name, utf8Encode(value)]));
    const request = new OutgoingRequest(fields);
    const methods = { GET: "get", POST: "post", PUT: "put", PATCH: "patch", DELETE: "delete" };
    const tag = methods[method.toUpperCase()];
    request.setMethod(tag ? { tag } : { tag: "other", val: method });
    request.setScheme({ tag: scheme.toUpperCase() });
    request.setAuthority(authority);
    request.setPathWithQuery(path);
    let options = null;
    if (timeout !== null) {
      options = new RequestOptions();
      options.setFirstByteTimeout(BigInt(Math.round(timeout * 1e6)));
    }
    // No body at all unless there is one: an opened body without a length
    // would go out chunked, and the request would wait for its end.
    const outgoing = bytes === null ? null : request.body();
    let pending;
    try {
      pending = handle(request, options);
    } catch (error) {
      throw httpError(shown, error.payload ?? error);
    }
    if (outgoing !== null) {
      const stream = outgoing.write();
      for (let start = 0; start < bytes.length; start += 4096) stream.blockingWriteAndFlush(bytes.subarray(start, start + 4096));
      stream[Symbol.dispose]();
      OutgoingBody.finish(outgoing, null);
    }
    pending.subscribe().block();
    const result = pending.get();
    if (result == null || result.tag === "err") throw new UnknownError(`${shown}: no response`);
    if (result.val.tag === "err") throw httpError(shown, result.val.val);
    const response = result.val.val;
    const status = response.status();
    const responseHeaders = {};
    for (const [name, value] of response.headers().entries()) {
      responseHeaders[name.toLowerCase()] ??= utf8Decode(value);
    }
    const incoming = response.consume();
    const input = incoming.stream();
    const chunks = [];
    let length = 0;
    for (;;) {
      let chunk;
      try {
        chunk = input.blockingRead(65536n);
      } catch (error) {
        const payload = error.payload ?? error;
        if (payload && payload.tag === "closed") break;
        const ioError = payload && payload.val;
        const code = ioError ? httpErrorCode(ioError) : null;
        if (code != null) throw httpError(shown, code);
        const text = ioError ? ioError.toDebugString() : String(payload);
        if (text.includes("body size exceeds limit")) {
          throw new InvalidData(`${shown}: the response is too large (${text}; the step's http grant sets max-response)`, { permanent: true });
        }
        throw new UnknownError(`${shown}: reading the body failed: ${text}`);
      }
      chunks.push(chunk);
      length += chunk.length;
    }
    input[Symbol.dispose]();
    IncomingBody.finish(incoming);
    const all_ = new Uint8Array(length);
    let at = 0;
    for (const chunk of chunks) { all_.set(chunk, at); at += chunk.length; }
    return new Response(status, responseHeaders, all_);
  }
}

