"""`Endpoint`: runpod-flash 1.21's resource config and decorator, for Flash components.

```python
gpu = Endpoint(name="gpu_worker", gpu=GpuGroup.AMPERE_48, workers=(0, 3))

@gpu                       # queue-based: jobs through /run and /runsync
async def embed(text: str) -> list[float]: ...

api = Endpoint(name="api", cpu="cpu3c-1-2", workers=(1, 3))

@api.post("/predict")      # load-balanced: plain HTTP routes
async def predict(text: str) -> dict:
    return {"vector": await embed(text)}   # a call to another endpoint
```

The arguments and their rules are runpod-flash's, with its error texts. Options that
have no meaning for a WebAssembly component are refused when they are set (see
`_REFUSED`, and the table in docs/python-sdk.md); their defaults are accepted.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable

from . import _runtime
from .resources import (
    CpuInstanceType, CudaVersion, DataCenter, GpuGroup, GpuType, ServerlessScalerType,
)

DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 1

_VALID_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})
_RESERVED_PATHS = frozenset({"/execute", "/ping"})

_PARAMETERS = (
    "name", "id", "gpu", "cpu", "workers", "idle_timeout", "dependencies",
    "system_dependencies", "accelerate_downloads", "volume", "datacenter", "env",
    "gpu_count", "execution_timeout_ms", "flashboot", "image", "scaler_type",
    "scaler_value", "template", "min_cuda_version", "max_concurrency",
)

# Options Flash cannot honour, with why and what to do instead. Each is refused only when
# set to something other than its default.
_REFUSED = {
    "id": "Endpoint(id=...) is runpod-flash's client for an endpoint deployed elsewhere; "
    "Flash functions call each other by name: await the decorated function instead",
    "image": "a Flash function runs as a WebAssembly component inside flash-host, so there "
    "is no container image to choose",
    "template": "Flash generates the endpoint's template (flash-host and the artifact); "
    "set environment variables with env={...}",
    "volume": "a WebAssembly component has no file system to mount a network volume on",
    "system_dependencies": "a WebAssembly component cannot use system packages; use "
    "pure-Python packages in dependencies=[...] or the host's wasi:nn for inference",
    "max_concurrency": "flash-host runs every request in a fresh instance and bounds "
    "concurrency itself",
}
_DEFAULTS: dict[str, Any] = {
    "id": None, "image": None, "template": None, "volume": None,
    "system_dependencies": None, "max_concurrency": 1,
}


class Endpoint:
    """One resource config (a deployable endpoint) and the decorator that puts functions
    on it: `@Endpoint(...)` for a queue-based endpoint, `@api.get("/path")` (and post, put,
    delete, patch) for a load-balanced one."""

    def __init__(self, name: str | None = None, **options: Any):
        unknown = [k for k in options if k not in _PARAMETERS]
        if unknown:
            suggestion = difflib.get_close_matches(unknown[0], _PARAMETERS, n=1)
            hint = f". Did you mean '{suggestion[0]}'?" if suggestion else ""
            raise TypeError(
                f"Endpoint() got an unexpected keyword argument '{unknown[0]}'{hint}"
            )
        settings = {
            "id": None, "gpu": None, "cpu": None, "workers": None, "idle_timeout": 60,
            "dependencies": None, "system_dependencies": None, "accelerate_downloads": True,
            "volume": None, "datacenter": None, "env": None, "gpu_count": 1,
            "execution_timeout_ms": 0, "flashboot": True, "image": None, "scaler_type": None,
            "scaler_value": 4, "template": None, "min_cuda_version": CudaVersion.V12_8,
            "max_concurrency": 1,
        }
        settings.update(options)
        gpu, cpu = settings["gpu"], settings["cpu"]
        if gpu is not None and cpu is not None:
            raise ValueError("gpu and cpu are mutually exclusive. specify one or neither.")
        if settings["id"] is not None and settings["image"] is not None:
            raise ValueError(
                "id and image are mutually exclusive. id= connects to an existing endpoint, "
                "image= deploys a new one."
            )
        if settings["max_concurrency"] < 1:
            raise ValueError(
                f"max_concurrency must be >= 1, got {settings['max_concurrency']}"
            )
        idle_timeout = settings["idle_timeout"]
        if not isinstance(idle_timeout, int) or not 1 <= idle_timeout <= 3600:
            raise ValueError("idleTimeout must be between 1 and 3600 seconds")
        if not isinstance(settings["execution_timeout_ms"], int) or settings["execution_timeout_ms"] < 0:
            raise ValueError(
                f"execution_timeout_ms must be >= 0 (0: the host's default), got "
                f"{settings['execution_timeout_ms']!r}"
            )
        if not isinstance(settings["scaler_value"], int) or settings["scaler_value"] < 1:
            raise ValueError(f"scaler_value must be >= 1, got {settings['scaler_value']!r}")
        for option, why in _REFUSED.items():
            if settings[option] != _DEFAULTS[option]:
                raise ValueError(f"Endpoint({option}=...) is not supported by Flash: {why}.")
        if name is not None:
            _check_name(name)

        self.name = name
        self._gpu = _normalize_gpu(gpu)
        self._cpu = _normalize_cpu(cpu)
        self._is_cpu = cpu is not None
        if not self._is_cpu and self._gpu is None:
            self._gpu = [GpuGroup.ANY]
        self._workers_min, self._workers_max = _normalize_workers(settings["workers"])
        self.idle_timeout = idle_timeout
        self.execution_timeout_ms = settings["execution_timeout_ms"]
        self.dependencies = list(settings["dependencies"] or [])
        self.system_dependencies = list(settings["system_dependencies"] or [])
        self.accelerate_downloads = settings["accelerate_downloads"]
        self.env = dict(settings["env"] or {})
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"env must map strings to strings, got {key!r}: {value!r}")
        gpu_count = settings["gpu_count"]
        if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count < 1:
            raise ValueError(f"gpu_count must be an int >= 1, got {gpu_count!r}")
        self.gpu_count = gpu_count
        self.datacenter = _normalize_datacenters(settings["datacenter"])
        if not isinstance(settings["flashboot"], bool):
            raise ValueError(f"flashboot must be True or False, got {settings['flashboot']!r}")
        self.flashboot = settings["flashboot"]
        self.min_cuda_version = settings["min_cuda_version"]
        if self.min_cuda_version is not None and _value(self.min_cuda_version) not in {
            v.value for v in CudaVersion
        }:
            raise ValueError(
                f"min_cuda_version must be one of "
                f"{', '.join(v.value for v in CudaVersion)}, got {self.min_cuda_version!r}"
            )
        self._explicit_scaler_type = (
            ServerlessScalerType(settings["scaler_type"])
            if settings["scaler_type"] is not None
            else None
        )
        self.scaler_value = settings["scaler_value"]
        self._routes: list[dict[str, Any]] = []
        self._qb_target: Any = None

    # -- what runpod-flash exposes --

    @property
    def is_cpu(self) -> bool:
        return self._is_cpu

    @property
    def is_load_balanced(self) -> bool:
        return len(self._routes) > 0

    @property
    def workers_min(self) -> int:
        return self._workers_min

    @property
    def workers_max(self) -> int:
        return self._workers_max

    @property
    def scaler_type(self) -> ServerlessScalerType:
        """REQUEST_COUNT for load-balanced endpoints and QUEUE_DELAY for queue ones,
        unless set."""
        if self._explicit_scaler_type is not None:
            return self._explicit_scaler_type
        if self.is_load_balanced:
            return ServerlessScalerType.REQUEST_COUNT
        return ServerlessScalerType.QUEUE_DELAY

    # -- queue-based: @Endpoint(...) --

    def __call__(self, func_or_class: Any) -> Any:
        """Puts a function (sync or async) or a class on this queue-based endpoint."""
        if self._routes:
            raise ValueError(
                "cannot use Endpoint as a direct decorator after registering routes with "
                ".get()/.post()/etc. use one pattern or the other."
            )
        if not callable(func_or_class):
            raise TypeError(
                f"@Endpoint(...) decorates a function or a class, got "
                f"{type(func_or_class).__name__}"
            )
        if self.name is None:
            self.name = func_or_class.__name__
            _check_name(self.name)
        self._qb_target = func_or_class
        return self._register(func_or_class, None, None)

    # -- load-balanced: @api.get("/path") ... --

    def get(self, path: str) -> Callable[[Callable[..., Any]], Any]:
        """Registers a GET route; its arguments come from the query string."""
        return self._route("GET", path)

    def post(self, path: str) -> Callable[[Callable[..., Any]], Any]:
        """Registers a POST route; its arguments come from the JSON body."""
        return self._route("POST", path)

    def put(self, path: str) -> Callable[[Callable[..., Any]], Any]:
        return self._route("PUT", path)

    def delete(self, path: str) -> Callable[[Callable[..., Any]], Any]:
        return self._route("DELETE", path)

    def patch(self, path: str) -> Callable[[Callable[..., Any]], Any]:
        return self._route("PATCH", path)

    def _route(self, method: str, path: str) -> Callable[[Callable[..., Any]], Any]:
        if self.name is None:
            raise ValueError(
                "name is required for load-balanced endpoints. use Endpoint(name='my-api', "
                "...) when registering routes."
            )
        method = method.upper()
        if method not in _VALID_HTTP_METHODS:
            raise ValueError(f"method must be one of {_VALID_HTTP_METHODS}, got: {method}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"path must start with '/', got: {path}")
        if path in _RESERVED_PATHS:
            raise ValueError(
                f"path '{path}' is reserved by the framework. reserved paths: "
                f"{', '.join(sorted(_RESERVED_PATHS))}"
            )
        if self._qb_target is not None:
            raise ValueError(
                "cannot add routes after using Endpoint as a direct decorator. use one "
                "pattern or the other."
            )

        def decorator(func: Callable[..., Any]) -> Any:
            for existing in self._routes:
                if existing["method"] == method and existing["path"] == path:
                    raise ValueError(
                        f"duplicate route: {method} {path} (already registered to "
                        f"'{existing['function_name']}')"
                    )
            self._routes.append(
                {"method": method, "path": path, "function": func, "function_name": func.__name__}
            )
            return self._register(func, method, path)

        return decorator

    def _register(self, target: Any, method: str | None, path: str | None) -> Any:
        entry = _runtime.Function(
            name=target.__name__,
            resource=self.name,
            module=getattr(target, "__module__", "") or "",
            target=target,
            http_method=method,
            http_path=path,
        )
        _runtime.register_endpoint(self)
        _runtime.register_function(entry)
        if inspect.isclass(target):
            return _RemoteClass(entry)
        return _RemoteFunction(entry)

    def _resource_spec(self) -> dict[str, Any]:
        """This endpoint as a WIT `resource-config` (see `_runtime.describe`)."""
        if self._is_cpu:
            compute = {"cpu": {"instance_ids": [_value(c) for c in self._cpu or []]}}
        else:
            compute = {
                "gpu": {"gpu_ids": [_value(g) for g in self._gpu or []], "gpu_count": self.gpu_count}
            }
        return {
            "name": self.name,
            "kind": "load-balanced" if self.is_load_balanced else "queue",
            "compute": compute,
            "workers_min": self._workers_min,
            "workers_max": self._workers_max,
            "idle_timeout_s": self.idle_timeout,
            "execution_timeout_ms": self.execution_timeout_ms or None,
            "scaler_type": {
                ServerlessScalerType.QUEUE_DELAY: "queue-delay",
                ServerlessScalerType.REQUEST_COUNT: "request-count",
            }[self.scaler_type],
            "scaler_value": self.scaler_value,
            "env": sorted([k, v] for k, v in self.env.items()),
            "placement": {
                "locations": list(self.datacenter),
                # runpod-flash sends a CUDA requirement for GPU endpoints only; the default
                # is the platform's own, so only a chosen version is carried.
                "min_cuda_version": (
                    _value(self.min_cuda_version)
                    if self.min_cuda_version is not None
                    and _value(self.min_cuda_version) != CudaVersion.V12_8.value
                    else None
                ),
                "container_disk_gb": None,
                "flashboot": None if self.flashboot else False,
            },
        }

    def __repr__(self) -> str:
        kind = "load-balanced" if self.is_load_balanced else "queue"
        return f"Endpoint(name={self.name!r}, {kind})"


class _RemoteFunction:
    """A decorated function: calling it returns a coroutine that runs it in place or on
    its endpoint (see `_runtime.call`)."""

    def __init__(self, entry: _runtime.Function):
        self._entry = entry
        functools.update_wrapper(self, entry.target)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _runtime.call(self._entry, args, kwargs)

    def __repr__(self) -> str:
        return f"<flash function {self._entry.name} on {self._entry.resource}>"


class _RemoteClass:
    """A decorated class: `Model()` gives an object whose public methods return
    coroutines; on another endpoint each call runs on a fresh instance there."""

    def __init__(self, entry: _runtime.Function):
        self._entry = entry
        functools.update_wrapper(self, entry.target, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise TypeError(
                f"{self._entry.name}(): class endpoints are built without arguments "
                "(Flash makes a fresh instance for each call)"
            )
        return _RemoteInstance(self._entry)


class _RemoteInstance:
    def __init__(self, entry: _runtime.Function):
        self._entry = entry

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or not callable(getattr(self._entry.target, method, None)):
            raise AttributeError(f"{self._entry.name} has no public method {method!r}")

        def call(**kwargs: Any) -> Any:
            return _runtime.call_method(self._entry, method, kwargs)

        return call


def _check_name(name: Any) -> None:
    valid = (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )
    if not valid:
        raise ValueError(
            f"endpoint name {name!r} is invalid: use 1 to 64 letters, digits, '_' and '-'"
        )


def _normalize_workers(workers: Any) -> tuple[int, int]:
    if workers is None:
        return (DEFAULT_WORKERS_MIN, DEFAULT_WORKERS_MAX)
    if isinstance(workers, int) and not isinstance(workers, bool):
        min_w, max_w = DEFAULT_WORKERS_MIN, workers
    elif isinstance(workers, (tuple, list)) and len(workers) == 2:
        min_w, max_w = int(workers[0]), int(workers[1])
    else:
        raise ValueError(
            f"workers must be an int or (min, max) tuple, got {type(workers).__name__}: "
            f"{workers}"
        )
    if min_w < 0 or max_w < 0:
        raise ValueError(f"workers cannot be negative: ({min_w}, {max_w})")
    if min_w > max_w:
        raise ValueError(f"workers min ({min_w}) cannot exceed max ({max_w})")
    return (min_w, max_w)


def _normalize_gpu(gpu: Any) -> list[Any] | None:
    if gpu is None:
        return None
    if isinstance(gpu, (GpuGroup, GpuType)):
        return [gpu]
    if isinstance(gpu, list):
        for g in gpu:
            if not isinstance(g, (GpuGroup, GpuType)):
                raise ValueError(
                    f"gpu list elements must be GpuGroup or GpuType, got {type(g).__name__}"
                )
        return gpu
    raise ValueError(f"gpu must be a GpuGroup, GpuType, or list, got {type(gpu).__name__}")


def _normalize_cpu(cpu: Any) -> list[CpuInstanceType] | None:
    if cpu is None:
        return None
    if isinstance(cpu, CpuInstanceType):
        return [cpu]
    if isinstance(cpu, str):
        return [CpuInstanceType(cpu)]
    if isinstance(cpu, list):
        return [CpuInstanceType(c) if isinstance(c, str) else c for c in cpu]
    raise ValueError(
        f"cpu must be a CpuInstanceType, string, or list, got {type(cpu).__name__}"
    )


def _normalize_datacenters(datacenter: Any) -> list[str]:
    """`DataCenter`, string, or a list of them → RunPod data centre ids (`flash build`
    checks them)."""
    if datacenter is None:
        return []
    items = datacenter if isinstance(datacenter, (list, tuple)) else [datacenter]
    out = []
    for item in items:
        if not isinstance(item, (str, DataCenter)):
            raise ValueError(
                f"datacenter must be a DataCenter, a string, or a list of them, got "
                f"{type(item).__name__}"
            )
        out.append(_value(item))
    return out


def _value(member: Any) -> str:
    return member.value if hasattr(member, "value") else str(member)
