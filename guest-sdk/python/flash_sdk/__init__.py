"""Flash's Python SDK: write functions for Flash endpoints as you would for runpod-flash.

A runpod-flash 1.21 app moves to Flash by changing `from runpod_flash import ...` to
`from flash_sdk import ...`. `flash build` bundles this package into every Python
component; see docs/python-sdk.md for what maps onto what, and what Flash refuses.
"""

from __future__ import annotations

from typing import Any

from . import _runtime
from .endpoint import DEFAULT_WORKERS_MAX, DEFAULT_WORKERS_MIN, Endpoint
from .errors import ErrorKind, RemoteError
from .resources import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    NetworkVolume,
    ServerlessScalerType,
)

__all__ = [
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "CpuInstanceType",
    "CudaVersion",
    "DataCenter",
    "Endpoint",
    "ErrorKind",
    "GpuGroup",
    "GpuType",
    "NetworkVolume",
    "RemoteError",
    "ServerlessScalerType",
    "current_resource",
    "emit",
    "peer_call",
]


def current_resource() -> str | None:
    """The resource config this instance serves (`FLASH_RESOURCE_NAME`); None outside an
    endpoint."""
    return _runtime.current_resource()


def emit(chunk: Any) -> None:
    """Streams `chunk` (any JSON value) as partial output of the running job.

    On queue endpoints each chunk goes to the job's stream (RunPod `/stream/{id}`) as it is
    emitted; HTTP routes and calls from other functions ignore chunks. Outside a component
    it does nothing.

    The host bounds what a call sends: `emit` waits while the host's queue of unposted
    chunks is full (the call's deadline still runs), and every chunk counts against the
    call's host memory budget (`FLASH_CALL_BUDGET_MB`, by default the memory cap); a chunk
    past it ends the call with an error that says so.
    """
    _runtime.emit(chunk)


def peer_call(function: str, *args: Any, **kwargs: Any) -> Any:
    """Calls any function of the app by name, whatever its language, and returns an
    awaitable of its result: `await peer_call("word_stats", text="hi")`.

    Decorated Python functions are simpler to call directly; this reaches functions of
    other components (a Rust or JavaScript function). Failures raise `RemoteError`.
    """
    return _runtime.call_by_name(function, args, kwargs)
