"""wasaga: write Wasaga workflow steps in Python.

A step is two functions over plain JSON values (dicts, lists, str, numbers)::

    from wasaga import create_step, StepResponse, InvalidData

    def invoke(input, ctx):
        if len(input["name"]) < 2:
            raise InvalidData("a brand name needs at least 2 characters", permanent=True)
        brand = ctx.entities("brand").create({"name": input["name"]})
        return StepResponse(brand, compensation=brand["id"])

    def compensate(brand_id, ctx):
        if brand_id is not None:
            ctx.entities("brand").delete(brand_id)

    WitWorld = create_step(invoke, compensate)

componentize-py turns the module into a component of the world ``step``
(``wit/step.wit``)::

    componentize-py -d wit -w step componentize app -p . -p guest-sdk/python -o app.wasm

The API mirrors the Rust SDK (``wasaga-sdk``): a manifest cannot tell which
language a step is written in.
"""

import json
import traceback
from typing import Any, Callable, Optional

from componentize_py_types import Err
from wit_world.imports import container as _container
from wit_world.imports import log as _log
try:
    # Built for the world `step-http`, componentize-py names an interface by
    # its package when two share a name (wasaga:step/types, wasi:http/types).
    from wit_world.imports import wasaga_step_types as _types
except ImportError:
    from wit_world.imports import types as _types
from wit_world.imports import secrets as _secrets
# Imported here, not where used: componentize-py keeps only the modules a
# step imports while it is built. Absent for the world `step`.
try:
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _http
except ImportError:
    _outgoing = None

__all__ = [
    "create_step", "StepResponse", "StepContext", "StepError", "InvalidData", "InvalidArgument", "NotFound",
    "NotAllowed", "Unauthorized", "Forbidden", "Conflict", "Duplicate", "UnexpectedState", "DatabaseError",
    "UnknownError", "Entities", "Events", "Settings", "Http", "Response", "log",
]

_UNSET = object()


class StepError(Exception):
    """A step failure: a kind, a message, whether retrying can help
    (``permanent``), and optional data for the step's own compensation."""

    kind = "unknown"

    def __init__(self, message: str, *, permanent: bool = False, compensation: Any = _UNSET, kind: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.compensation = compensation
        if kind is not None:
            self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind}: {self.message!r}, permanent={self.permanent})"

    def _to_wit(self) -> "_types.StepError":
        data = None if self.compensation is _UNSET else json.dumps(self.compensation)
        return _types.StepError(_KINDS[self.kind], self.message, self.permanent, data)


class InvalidData(StepError):
    kind = "invalid-data"


class InvalidArgument(StepError):
    kind = "invalid-argument"


class NotFound(StepError):
    kind = "not-found"


class NotAllowed(StepError):
    kind = "not-allowed"


class Unauthorized(StepError):
    kind = "unauthorized"


class Forbidden(StepError):
    kind = "forbidden"


class Conflict(StepError):
    kind = "conflict"


class Duplicate(StepError):
    kind = "duplicate"


class UnexpectedState(StepError):
    kind = "unexpected-state"


class DatabaseError(StepError):
    kind = "database"


class UnknownError(StepError):
    kind = "unknown"


_KINDS = {
    "invalid-data": _types.ErrorKind.INVALID_DATA,
    "invalid-argument": _types.ErrorKind.INVALID_ARGUMENT,
    "not-found": _types.ErrorKind.NOT_FOUND,
    "not-allowed": _types.ErrorKind.NOT_ALLOWED,
    "unauthorized": _types.ErrorKind.UNAUTHORIZED,
    "forbidden": _types.ErrorKind.FORBIDDEN,
    "conflict": _types.ErrorKind.CONFLICT,
    "duplicate": _types.ErrorKind.DUPLICATE,
    "unexpected-state": _types.ErrorKind.UNEXPECTED_STATE,
    "database": _types.ErrorKind.DATABASE,
    "unknown": _types.ErrorKind.UNKNOWN,
}
_CLASSES = {cls.kind: cls for cls in (InvalidData, InvalidArgument, NotFound, NotAllowed, Unauthorized, Forbidden,
                                      Conflict, Duplicate, UnexpectedState, DatabaseError, UnknownError)}


def _from_wit(error: "_types.StepError") -> StepError:
    kind = next((name for name, value in _KINDS.items() if value == error.kind), "unknown")
    compensation = _UNSET if error.compensation_data is None else json.loads(error.compensation_data)
    return _CLASSES[kind](error.message, permanent=error.permanent, compensation=compensation)


def _call(function, *args):
    """Calls a capability import, raising its error as a StepError."""
    try:
        return function(*args)
    except Err as err:
        raise _from_wit(err.value) from None


class StepResponse:
    """What a successful ``invoke`` returns (Medusa's ``StepResponse``):
    an output and, optionally, other data for ``compensate``."""

    def __init__(self, output: Any = None, compensation: Any = _UNSET):
        self.output = output
        self.compensation = compensation
        self.skipped = False

    @staticmethod
    def skip() -> "StepResponse":
        """The step chose not to run: its ``as`` name is bound to null and it is not compensated."""
        response = StepResponse()
        response.skipped = True
        return response


class Entities:
    """A granted entities collection: JSON objects with host-managed ``id``,
    ``created_at``, ``updated_at`` and ``deleted_at``."""

    def __init__(self, collection):
        self._collection = collection

    def create(self, data: dict) -> dict:
        return json.loads(_call(self._collection.create, json.dumps(data)))

    def get(self, id: str) -> dict:
        return json.loads(_call(self._collection.get, id))

    def update(self, id: str, data: dict) -> dict:
        return json.loads(_call(self._collection.update, id, json.dumps(data)))

    def delete(self, id: str) -> None:
        _call(self._collection.delete, id)

    def soft_delete(self, id: str) -> dict:
        return json.loads(_call(self._collection.soft_delete, id))

    def restore(self, id: str) -> dict:
        return json.loads(_call(self._collection.restore, id))

    def list(self, filters: Optional[dict] = None, *, with_deleted: bool = False, limit: Optional[int] = None,
             offset: int = 0) -> list:
        from wit_world.imports import entities as _entities
        query = _entities.ListQuery(
            [_entities.Filter(field, json.dumps(value)) for field, value in (filters or {}).items()],
            with_deleted, limit, offset)
        return [json.loads(row) for row in _call(self._collection.list, query)]


class Events:
    """The run's event emitter."""

    def __init__(self, emitter):
        self._emitter = emitter

    def emit(self, name: str, data: Any = None) -> None:
        _call(self._emitter.emit, name, json.dumps(data))


class Settings:
    """The ``[config]`` keys granted to the step."""

    def __init__(self, settings):
        self._settings = settings

    def get(self, key: str, default: Any = None) -> Any:
        value = _call(self._settings.get, key)
        return default if value is None else json.loads(value)


class Response:
    """An HTTP response: ``status``, ``headers`` (names in lowercase), ``body`` (bytes)."""

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise InvalidData(f"the response ({self.status}) is not the JSON expected: {error}") from None


class Http:
    """Outbound HTTP through the standard ``wasi:http/outgoing-handler``, to
    the hosts the step's ``http`` grant allows. Each request carries
    ``Idempotency-Key: <idempotency_key>:<n>`` unless the step sets one."""

    def get(self, url: str, **options) -> Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options) -> Response:
        return self.request("POST", url, **options)

    def put(self, url: str, **options) -> Response:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options) -> Response:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options) -> Response:
        return self.request("DELETE", url, **options)

    def request(self, method: str, url: str, *, headers: Optional[dict] = None, json: Any = _UNSET,
                body: Optional[bytes] = None, timeout: Optional[float] = None) -> Response:
        """Sends a request and reads the whole response. ``json`` sets a JSON
        body; ``timeout`` (seconds) bounds the wait for the response to start."""
        if _outgoing is None:
            raise InvalidArgument("this step was built without wasi:http: build it for the world step-http "
                                  "(componentize-py -d wit -w step-http ...)", permanent=True)

        scheme, authority, path = _split_url(url)
        shown = f"{method} {scheme}://{authority}{path.split('?')[0]}"
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if json is not _UNSET:
            body = _json.dumps(json).encode()
            headers.setdefault("content-type", "application/json")
        if body is not None:
            headers["content-length"] = str(len(body))
        fields = _http.Fields.from_list([(k, str(v).encode()) for k, v in headers.items()])
        request = _http.OutgoingRequest(fields)
        methods = {"GET": _http.Method_Get(), "POST": _http.Method_Post(), "PUT": _http.Method_Put(),
                   "PATCH": _http.Method_Patch(), "DELETE": _http.Method_Delete()}
        request.set_method(methods.get(method.upper(), _http.Method_Other(method)))
        request.set_scheme(_http.Scheme_Https() if scheme == "https" else _http.Scheme_Http())
        request.set_authority(authority)
        request.set_path_with_query(path)
        options = None
        if timeout is not None:
            options = _http.RequestOptions()
            options.set_first_byte_timeout(int(timeout * 1e9))
        # No body at all unless there is one: an opened body without a length
        # would go out chunked, and the request would wait for its end.
        outgoing = request.body() if body is not None else None
        try:
            pending = _outgoing.handle(request, options)
        except Err as err:
            raise _http_error(shown, err.value) from None
        if outgoing is not None:
            stream = outgoing.write()
            for start in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[start:start + 4096])
            stream.__exit__(None, None, None)
            _http.OutgoingBody.finish(outgoing, None)
        pending.subscribe().block()
        result = pending.get()
        if result is None or isinstance(result, Err):
            raise UnknownError(f"{shown}: no response")
        inner = result.value
        if isinstance(inner, Err):
            raise _http_error(shown, inner.value)
        response = inner.value
        status = response.status()
        response_headers = {}
        for name, value in response.headers().entries():
            response_headers.setdefault(name.lower(), value.decode("utf-8", "replace"))
        incoming = response.consume()
        stream = incoming.stream()
        chunks = []
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as err:
                if isinstance(err.value, _streams.StreamError_Closed):
                    break
                io_error = err.value.value
                code = _http.http_error_code(io_error)
                if code is not None:
                    raise _http_error(shown, code) from None
                text = io_error.to_debug_string()
                if "body size exceeds limit" in text:
                    raise InvalidData(f"{shown}: the response is too large ({text}; the step's http grant "
                                      "sets max-response)", permanent=True) from None
                raise UnknownError(f"{shown}: reading the body failed: {text}") from None
        stream.__exit__(None, None, None)
        _http.IncomingBody.finish(incoming)
        return Response(status, response_headers, b"".join(chunks))


_json = json


def _split_url(url: str):
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise InvalidArgument(f"'{url}' is not a URL a step can request: use http:// or https://", permanent=True)
    rest = rest.split("#")[0]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    authority, path = rest[:cut], rest[cut:] or "/"
    if not authority:
        raise InvalidArgument(f"'{url}' has no host", permanent=True)
    if path.startswith("?"):
        path = "/" + path
    return scheme, authority, path


def _http_error(shown: str, code) -> StepError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    if name == "HttpRequestDenied":
        return NotAllowed(f"{shown} was denied: the step is not granted that host (the step's log and the run's "
                          "trace show the grant to add)", permanent=True)
    if name == "DestinationIpProhibited":
        return NotAllowed(f"{shown} was denied: it goes to a private address its grant does not name", permanent=True)
    if name == "HttpResponseBodySize":
        return InvalidData(f"{shown}: the response is too large", permanent=True)
    if "Timeout" in name:
        return UnknownError(f"{shown} timed out")
    if name.startswith("Tls"):
        return UnknownError(f"{shown}: TLS failed ({name})")
    if name == "InternalError":
        return UnknownError(f"{shown} failed: {getattr(code, 'value', '')}", permanent=True)
    return UnknownError(f"{shown}: the connection failed ({name})")


class StepContext:
    """Who is calling and why, and the door to the step's granted capabilities."""

    def __init__(self, ctx: "_types.StepContext"):
        self.workflow = ctx.workflow
        self.run_id = ctx.run_id
        self.transaction_id = ctx.transaction_id
        self.step = ctx.step
        self.attempt = ctx.attempt
        self.idempotency_key = ctx.idempotency_key
        self.metadata = json.loads(ctx.metadata)
        self.config = json.loads(ctx.config)

    def _resolve(self, name: str, variant, what: str):
        capability = _call(_container.resolve, name)
        if not isinstance(capability, variant):
            raise InvalidArgument(f"the capability '{name}' is not {what}", permanent=True)
        return capability.value

    def entities(self, name: str) -> Entities:
        """The entities collection granted as ``name`` (``grants = { entities = ["name"] }``)."""
        return Entities(self._resolve(name, _container.Capability_Entities, "an entities collection"))

    def events(self) -> Events:
        """The run's event emitter (``grants = { events = true }``)."""
        return Events(self._resolve("events", _container.Capability_Events, "the event emitter"))

    def settings(self) -> Settings:
        """The ``[config]`` keys granted to the step (``grants = { config = ["key"] }``)."""
        return Settings(self._resolve("config", _container.Capability_Config, "the config reader"))

    def http(self) -> Http:
        """Outbound HTTP (``grants = { http = ["https://api.example.com"] }``)."""
        return Http()

    def secret(self, name: str) -> str:
        """A placeholder for the secret ``name`` (``grants = { secrets = ["name"] }``): put it where the
        value belongs in a request; the host swaps the value in on requests to the secret's hosts."""
        return _call(_secrets.placeholder, name)


class log:
    """Log lines to the host's log, tagged with the step (no grant needed). ``print`` works too."""

    @staticmethod
    def trace(message: str) -> None:
        _log.log(_log.Level.TRACE, message)

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)


def _failure(error: BaseException) -> Err:
    if isinstance(error, StepError):
        return Err(error._to_wit())
    if isinstance(error, (ValueError, KeyError, TypeError)):
        # Input that does not fit the step is invalid data; retrying will not help.
        return Err(InvalidData(f"{type(error).__name__}: {error}", permanent=True)._to_wit())
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    return Err(UnknownError(message)._to_wit())


def create_step(invoke: Callable[[Any, StepContext], Any], compensate: Optional[Callable[[Any, StepContext], None]] = None):
    """Makes the component's exports of ``invoke(input, ctx)`` and
    ``compensate(data, ctx)`` (Medusa's ``createStep``). ``invoke`` returns a
    ``StepResponse`` or a plain value (the output, also the compensation
    data); ``compensate`` receives the compensation data, or ``None`` when
    ``invoke`` itself failed. Assign the result to ``WitWorld``."""
    import wit_world

    class Step(wit_world.WitWorld):
        def invoke(self, input: str, ctx: "_types.StepContext") -> "_types.StepResponse":
            try:
                result = invoke(json.loads(input), StepContext(ctx))
            except Exception as error:  # noqa: BLE001 - every failure becomes a step error
                raise _failure(error) from None
            if not isinstance(result, StepResponse):
                result = StepResponse(result)
            if result.skipped:
                return _types.StepResponse_Skip()
            compensation = None if result.compensation is _UNSET else json.dumps(result.compensation)
            return _types.StepResponse_Done(_types.StepOutput(json.dumps(result.output), compensation))

        def compensate(self, data: Optional[str], ctx: "_types.StepContext") -> None:
            if compensate is None:
                return None
            try:
                compensate(None if data is None else json.loads(data), StepContext(ctx))
            except Exception as error:  # noqa: BLE001
                raise _failure(error) from None
            return None

    return Step
