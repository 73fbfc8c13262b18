"""The WebAssembly side of the SDK: binds `flash_sdk` to the WIT world `function`.

`flash build` generates a small entry module for componentize-py that calls `load` with the
app's modules and re-exports `Describe` and `Invoke`. componentize-py imports that entry
module while it pre-initialises the component, so the user's modules are imported (and
their `Endpoint`s registered) once, at build time; every call then starts from that
snapshot. This module is only importable inside a component (it needs the `wit_world`
bindings componentize-py generates); everything it calls is plain Python in `_runtime`.

A component has no files at run time: componentize-py keeps only what was imported while
it pre-initialised. So `load` also imports, at build time, every module the app's source
files import anywhere, including inside function bodies (runpod-flash apps import there:
`def f(): import datetime`), and caches the app's source lines for tracebacks.

The mapping onto the contract (`wit/flash.wit`):

* `describe` returns the registered resource configs and functions;
* `invoke` runs one function; a `_runtime.CallFailure` becomes the WIT `call-error`
  (kind, message and the Python traceback);
* calls to functions of other resource configs go out through the `peer` import, and
  `flash_sdk.emit` through `progress.emit`.
"""

from __future__ import annotations

import ast
import importlib
import linecache
import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import peer, progress
from wit_world.imports.types import (
    CallError,
    Compute_Cpu,
    Compute_Gpu,
    CpuSpec,
    Description,
    EndpointKind,
    ErrorKind,
    ErrorOrigin,
    FunctionSpec,
    GpuSpec,
    Placement,
    ResourceConfig,
    ScalerType,
)

from . import _runtime
from . import RemoteError

_ENDPOINT_KINDS = {"queue": EndpointKind.QUEUE, "load-balanced": EndpointKind.LOAD_BALANCED}
_SCALER_TYPES = {"queue-delay": ScalerType.QUEUE_DELAY, "request-count": ScalerType.REQUEST_COUNT}
_ERROR_KINDS = {kind.name.lower().replace("_", "-"): kind for kind in ErrorKind}


class _PeerTransport:
    """Peer calls and progress chunks through the host's imports."""

    def call(self, function: str, payload: str) -> str:
        try:
            return peer.call(function, payload)
        except Err as err:
            error: CallError = err.value
            kind = error.kind.name.lower().replace("_", "-")
            origin = None
            if error.origin is not None:
                origin = {
                    "function": error.origin.function,
                    "resource": error.origin.resource_config,
                    "via": list(error.origin.via),
                }
            raise RemoteError(kind, error.message, error.traceback, origin) from None

    def emit(self, chunk: str) -> None:
        progress.emit(chunk)


def load(modules: list[str]) -> None:
    """Imports the app's modules (at build time, during pre-initialisation), every module
    their source files import, and caches their source lines."""
    _runtime.install_transport(_PeerTransport())
    _runtime.load_modules(modules)
    roots = {_source_root(sys.modules[name]) for name in modules}
    for root in sorted(r for r in roots if r):
        for path in _python_files(root):
            _warm(path, root)
    _runtime.warm()


def _source_root(module) -> str | None:
    """The directory on `sys.path` that `module` was imported from."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    for _ in range(module.__name__.count(".")):
        directory = os.path.dirname(directory)
    if os.path.basename(path) == "__init__.py":
        directory = os.path.dirname(directory)
    return directory


def _python_files(root: str) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "__")))
        found += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    return found


def _warm(path: str, root: str) -> None:
    """Imports what `path` imports anywhere (a failing import stays a run-time error, as
    it would be in CPython), and keeps its lines for tracebacks."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines(keepends=True)
    # mtime None: linecache keeps the entry although the file is gone at run time.
    linecache.cache[path] = (len(source), None, lines, path)
    try:
        tree = ast.parse(source, path)
    except SyntaxError:
        return
    package = os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".").strip(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(p for p in [*parts, base] if p)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names if base]
        else:
            continue
        for name in names:
            if name and name not in sys.modules:
                try:
                    importlib.import_module(name)
                except BaseException:  # not installed, or not a module (`from x import fn`)
                    pass


def _resource(spec: dict) -> ResourceConfig:
    compute = spec["compute"]
    if "gpu" in compute:
        gpu = compute["gpu"]
        compute_wit = Compute_Gpu(GpuSpec(gpu_ids=list(gpu["gpu_ids"]), gpu_count=gpu["gpu_count"]))
    else:
        compute_wit = Compute_Cpu(CpuSpec(instance_ids=list(compute["cpu"]["instance_ids"])))
    scaler = spec.get("scaler_type")
    return ResourceConfig(
        name=spec["name"],
        kind=_ENDPOINT_KINDS[spec["kind"]],
        compute=compute_wit,
        workers_min=spec["workers_min"],
        workers_max=spec["workers_max"],
        idle_timeout_s=spec.get("idle_timeout_s"),
        execution_timeout_ms=spec.get("execution_timeout_ms"),
        scaler_type=_SCALER_TYPES[scaler] if scaler else None,
        scaler_value=spec.get("scaler_value"),
        env=[(key, value) for key, value in spec.get("env", [])],
        placement=_placement(spec.get("placement") or {}),
    )


def _placement(spec: dict) -> Placement:
    return Placement(
        locations=list(spec.get("locations") or []),
        min_cuda_version=spec.get("min_cuda_version"),
        container_disk_gb=spec.get("container_disk_gb"),
        flashboot=spec.get("flashboot"),
    )


def _function(spec: dict) -> FunctionSpec:
    return FunctionSpec(
        name=spec["name"],
        resource=spec["resource"],
        module=spec["module"],
        is_async=spec["is_async"],
        http_method=spec.get("http_method"),
        http_path=spec.get("http_path"),
    )


class Describe(exports.Describe):
    def describe(self) -> Description:
        description = _runtime.describe()
        return Description(
            resources=[_resource(r) for r in description["resources"]],
            functions=[_function(f) for f in description["functions"]],
        )


class Invoke(exports.Invoke):
    def invoke(self, function: str, input: str) -> str:
        try:
            return _runtime.invoke(function, input)
        except _runtime.CallFailure as failure:
            kind = _ERROR_KINDS.get(str(failure.kind), ErrorKind.INTERNAL)
            origin = None
            if failure.origin:
                origin = ErrorOrigin(
                    function=failure.origin["function"],
                    resource_config=failure.origin["resource"],
                    via=list(failure.origin.get("via") or []),
                )
            raise Err(
                CallError(
                    kind=kind,
                    message=failure.message,
                    traceback=failure.traceback,
                    origin=origin,
                )
            )
