"""The app registry and the two halves of a call: running a function for the host
(`invoke`) and calling a function of the app from Python (`call`).

`Endpoint` registers resource configs and functions here when the app's modules are
imported; in a component that happens once, at build time (see `_component`). The host
then calls `describe` to learn what the component provides and `invoke` to run one
function per job or request.

Calls between functions: calling a decorated function returns a coroutine (as in
runpod-flash). When it belongs to the resource config this instance serves
(`FLASH_RESOURCE_NAME`), or when no transport is installed (plain CPython on a
developer's machine), it runs in place with the Python values given. Otherwise its
arguments go out as JSON through the transport's `call` (the WIT `peer` import), and a
failure comes back as `RemoteError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import time
import traceback as tb
from typing import Any, Callable, Protocol

from . import _binding
from .errors import ErrorKind, RemoteError

RESOURCE_NAME_VAR = "FLASH_RESOURCE_NAME"
"""The environment variable that names the resource config an instance serves."""


class Transport(Protocol):
    """How calls and progress leave the component (the WIT `peer` and `progress` imports)."""

    def call(self, function: str, payload: str) -> str:
        """Runs `function` of the app with a JSON payload; raises `RemoteError`."""

    def emit(self, chunk: str) -> None:
        """Sends one JSON chunk of partial output."""


class CallFailure(Exception):
    """A failed `invoke`: the WIT `call-error` (kind, message, traceback, origin)."""

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        traceback: str | None = None,
        origin: dict | None = None,
    ):
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.traceback = traceback
        self.origin = origin


@dataclasses.dataclass
class Function:
    """One function of the app: what `describe` reports and `invoke` runs."""

    name: str
    resource: str
    module: str
    target: Callable[..., Any]
    """The user's function, or the class of a class endpoint."""
    http_method: str | None = None
    http_path: str | None = None

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.target)

    @property
    def is_async(self) -> bool:
        if self.is_class:
            return any(
                inspect.iscoroutinefunction(m) for _, m in _public_methods(self.target)
            )
        return inspect.iscoroutinefunction(self.target)


_transport: Transport | None = None
_functions: dict[str, list[Function]] = {}
_endpoints: list[Any] = []


def install_transport(transport: Transport) -> None:
    """Sends calls to other resource configs, and progress, through `transport`."""
    global _transport
    _transport = transport


def current_resource() -> str | None:
    """The resource config this instance serves (`FLASH_RESOURCE_NAME`), or None."""
    return os.environ.get(RESOURCE_NAME_VAR) or None


def register_endpoint(endpoint: Any) -> None:
    """Remembers an `Endpoint` that decorated something (its config is read at describe)."""
    if not any(e is endpoint for e in _endpoints):
        _endpoints.append(endpoint)


def register_function(function: Function) -> None:
    """Adds a function; a module imported again replaces its own earlier registration."""
    same = _functions.setdefault(function.name, [])
    same[:] = [f for f in same if f.module != function.module]
    same.append(function)


def load_modules(names: list[str]) -> None:
    """Imports the app's modules by name, which registers their endpoints."""
    for name in names:
        importlib.import_module(name)


def warm() -> None:
    """Does ahead of calls what every call would otherwise redo: the binding plans of every
    registered function (signatures, type hints, dataclass fields) and the event loop
    async functions run on. A component runs this while it is pre-initialised
    (`_component.load`), so each fresh instance starts with it done."""
    event_loop()
    for entries in _functions.values():
        for entry in entries:
            if not entry.is_class:
                _binding.warm(entry.target)
                continue
            for name, member in _public_methods(entry.target):
                static = isinstance(inspect.getattr_static(entry.target, name), staticmethod)
                _binding.warm(member, bound=not static)


def describe() -> dict[str, Any]:
    """Every resource config and function, shaped like the WIT `description` record.

    Two `Endpoint`s of one name with different settings are both reported, and so are two
    functions of one name: the manifest's validation names such conflicts.
    """
    resources: list[dict[str, Any]] = []
    for endpoint in _endpoints:
        spec = endpoint._resource_spec()
        if spec not in resources:
            resources.append(spec)
    functions = [
        {
            "name": f.name,
            "resource": f.resource,
            "module": f.module,
            "is_async": f.is_async,
            "http_method": f.http_method,
            "http_path": f.http_path,
        }
        for name in sorted(_functions)
        for f in _functions[name]
    ]
    resources.sort(key=lambda r: r["name"])
    return {"resources": resources, "functions": functions}


def dependencies() -> list[str]:
    """Every `Endpoint(dependencies=[...])` entry, sorted and without duplicates."""
    return sorted({d for e in _endpoints for d in (e.dependencies or [])})


def system_dependencies() -> list[str]:
    return sorted({d for e in _endpoints for d in (e.system_dependencies or [])})


def function(name: str) -> Function:
    """The registered function `name`, or `CallFailure(unknown-function)`."""
    found = _functions.get(name)
    if not found:
        known = ", ".join(sorted(_functions)) or "none"
        raise CallFailure(
            ErrorKind.UNKNOWN_FUNCTION,
            f"no function `{name}` in this component (it provides: {known})",
        )
    return found[0]


def invoke(name: str, payload: str) -> str:
    """Runs function `name` with a JSON payload and returns its JSON result.

    Raises `CallFailure`: `invalid-input` for arguments that do not fit, `user-error` with
    the Python traceback for an exception of the function, the callee's kind for an
    uncaught `RemoteError`.
    """
    entry = function(name)
    try:
        arguments = _binding.parse_payload(name, payload)
        if entry.is_class:
            target = _class_method(entry, arguments)
        else:
            target = entry.target
        args, kwargs = _binding.bind(name, target, arguments)
    except _binding.InvalidInput as e:
        raise CallFailure(ErrorKind.INVALID_INPUT, str(e)) from None
    try:
        result = target(*args, **kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
    except RemoteError as e:
        raise CallFailure(e.kind, e.message, e.traceback or _traceback(e), e.origin) from None
    except Exception as e:
        raise CallFailure(ErrorKind.USER_ERROR, _message(e), _traceback(e)) from None
    try:
        return _binding.encode(name, result)
    except _binding.NotJson as e:
        raise CallFailure(ErrorKind.USER_ERROR, str(e)) from None


def _class_method(entry: Function, arguments: dict[str, Any] | list[Any]) -> Callable[..., Any]:
    """The method of a fresh instance that a class endpoint's payload selects (`method`)."""
    methods = dict(_public_methods(entry.target))
    selected = arguments.pop("method", None) if isinstance(arguments, dict) else None
    if selected is None:
        if len(methods) != 1:
            names = ", ".join(sorted(methods))
            raise _binding.InvalidInput(
                f"`{entry.name}`: name the method to call with `method` (one of: {names})"
            )
        selected = next(iter(methods))
    if selected not in methods:
        names = ", ".join(sorted(methods))
        raise _binding.InvalidInput(
            f"`{entry.name}`: no public method `{selected}` (its methods: {names})"
        )
    return getattr(entry.target(), selected)


def _public_methods(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    ]


class _Selector:
    """No I/O to wait for: a component's calls to the host are synchronous imports. Only
    timers remain (`asyncio.sleep`), which waiting for `timeout` serves."""

    def select(self, timeout: float | None) -> list[Any]:
        if timeout:
            time.sleep(timeout)
        return []


class _ComponentEventLoop(asyncio.BaseEventLoop):
    """An asyncio event loop without sockets or pipes, which WASI components lack
    (`asyncio.run`'s default loop needs a socket pair). Tasks, `gather` and timers work."""

    def __init__(self) -> None:
        super().__init__()
        self._selector = _Selector()

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass


_loop: _ComponentEventLoop | None = None


def event_loop() -> _ComponentEventLoop:
    """The instance's event loop, made once. A component makes it while it is
    pre-initialised (`warm`): making a loop costs ten times what running a short coroutine
    on it does, and every call of a fresh instance would pay it again."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = _ComponentEventLoop()
    return _loop


def run_coroutine(awaitable: Any) -> Any:
    """Drives `awaitable` to completion, as `asyncio.run` would: in a copy of the current
    context, and with the tasks it left behind cancelled and its async generators closed
    before it returns (the loop itself is kept for the next call)."""

    async def wrapper() -> Any:
        return await awaitable

    loop = event_loop()
    try:
        return loop.run_until_complete(loop.create_task(wrapper()))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())


def _message(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _traceback(e: BaseException) -> str:
    """The traceback of `e` without the SDK's own frames."""
    frames = [f for f in tb.extract_tb(e.__traceback__) if not _is_sdk_file(f.filename)]
    lines = ["Traceback (most recent call last):\n"]
    lines += tb.format_list(frames)
    lines += tb.format_exception_only(type(e), e)
    return "".join(lines)


def _is_sdk_file(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == os.path.dirname(os.path.abspath(__file__))


async def call(entry: Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Calls a registered function from Python: in place or through the transport."""
    current = current_resource()
    if _transport is None or current is None or current == entry.resource:
        result = entry.target(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    payload = _binding.encode(entry.name, _named_arguments(entry, args, kwargs))
    return json.loads(_transport.call(entry.name, payload))


async def call_method(entry: Function, method: str, kwargs: dict[str, Any]) -> Any:
    """Calls `method` of a class endpoint: on a fresh instance, in place or remotely."""
    current = current_resource()
    if _transport is None or current is None or current == entry.resource:
        result = getattr(entry.target(), method)(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    payload = _binding.encode(entry.name, {"method": method, **kwargs})
    return json.loads(_transport.call(entry.name, payload))


async def call_by_name(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Calls any function of the app by name, whatever its language."""
    found = _functions.get(name)
    if found:
        return await call(found[0], args, kwargs)
    if _transport is None:
        raise RemoteError(
            ErrorKind.UNKNOWN_FUNCTION,
            f"no function `{name}` here; calls to functions of other components need a "
            "deployed app (or `flash run`)",
        )
    arguments: Any = list(args) if args and not kwargs else dict(kwargs)
    if args and kwargs:
        raise TypeError(f"peer_call({name!r}, ...): pass positional or keyword arguments, not both")
    return json.loads(_transport.call(name, _binding.encode(name, arguments)))


def _named_arguments(entry: Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`args` and `kwargs` as one JSON object of named arguments (positional values are
    mapped onto parameter names; values beyond them travel in an array)."""
    if entry.is_class:
        return dict(kwargs)
    params = _binding.plan(entry.target).params
    if any(p.kind == p.VAR_POSITIONAL for p in params) and len(args) > sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
    ):
        if kwargs:
            raise TypeError(
                f"{entry.name}(): surplus positional arguments and keyword arguments cannot "
                "be sent together to another endpoint"
            )
        return list(args)
    try:
        bound = inspect.signature(entry.target).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{entry.name}(): {e}") from None
    named: dict[str, Any] = {}
    for param in params:
        if param.name not in bound.arguments:
            continue
        value = bound.arguments[param.name]
        if param.kind == param.VAR_KEYWORD:
            named.update(value)
        else:
            named[param.name] = value
    return named


def emit(chunk: Any) -> None:
    """Sends `chunk` (any JSON value) as partial output of the running job."""
    payload = _binding.encode("emit", chunk)
    if _transport is not None:
        _transport.emit(payload)
