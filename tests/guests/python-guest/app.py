"""A Flash function component written in Python, by hand, against `wit/flash.wit`.

It exists to prove the contract is language-neutral: the host must treat it exactly
like a Rust component. componentize-py generates the `wit_world` bindings at build
time (see build.sh); this module implements the two exports, `describe` and `invoke`,
with the same calling convention and error semantics as the Rust SDK:

* input is a JSON object of named arguments or an array of positional ones
  (`null` or empty means none); absent arguments are `null` when the parameter
  allows it, otherwise `invalid-input`;
* unknown, surplus or mistyped arguments -> `invalid-input`;
* an unknown function -> `unknown-function`, listing the known ones;
* an exception raised by a function -> `user-error`.
"""

import json
from dataclasses import dataclass
from typing import Any, Callable

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import (
    Placement,
    CallError,
    Compute_Cpu,
    CpuSpec,
    Description,
    EndpointKind,
    ErrorKind,
    FunctionSpec,
    ResourceConfig,
)

PY_CONFIG = ResourceConfig(
    name="py_config",
    kind=EndpointKind.QUEUE,
    compute=Compute_Cpu(CpuSpec(instance_ids=["cpu3c-1-2"])),
    workers_min=0,
    workers_max=3,
    idle_timeout_s=None,
    execution_timeout_ms=None,
    scaler_type=None,
    scaler_value=None,
    env=[],
    placement=Placement(
        locations=[], min_cuda_version=None, container_disk_gb=None, flashboot=None
    ),
)


class InvalidInput(Exception):
    """Arguments that do not fit the function: reported as `invalid-input`."""


@dataclass
class Param:
    name: str
    check: Callable[[Any], bool]
    expected: str
    optional: bool = False


@dataclass
class Function:
    name: str
    params: list[Param]
    run: Callable[..., Any]


def is_int(value: Any) -> bool:
    # JSON booleans arrive as Python bools, which are ints: reject them.
    return isinstance(value, int) and not isinstance(value, bool)


def anything(_: Any) -> bool:
    return True


FUNCTIONS = {
    f.name: f
    for f in [
        Function("py_echo", [Param("value", anything, "any JSON value", optional=True)], lambda value: value),
        Function(
            "py_add",
            [Param("a", is_int, "an integer"), Param("b", is_int, "an integer")],
            lambda a, b: a + b,
        ),
    ]
}


def bind(function: Function, payload: str) -> list[Any]:
    """Decodes `payload` into the positional arguments of `function`."""
    name = function.name
    names = [p.name for p in function.params]
    try:
        parsed = json.loads(payload) if payload.strip() else None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"`{name}`: input is not valid JSON: {e}")
    values: dict[str, Any] = {}
    if parsed is None:
        pass
    elif isinstance(parsed, dict):
        for key, value in parsed.items():
            if key not in names:
                raise InvalidInput(f"`{name}`: unexpected argument `{key}`")
            values[key] = value
    elif isinstance(parsed, list):
        if len(parsed) > len(names):
            raise InvalidInput(f"`{name}`: takes {len(names)} argument(s), got {len(parsed)}")
        values = dict(zip(names, parsed))
    else:
        raise InvalidInput(
            f"`{name}`: input must be a JSON object of named arguments "
            "or an array of positional arguments"
        )
    args = []
    for param in function.params:
        if param.name not in values:
            if not param.optional:
                raise InvalidInput(f"`{name}`: missing argument `{param.name}`")
            args.append(None)
            continue
        value = values[param.name]
        if not param.check(value):
            raise InvalidInput(f"`{name}`: argument `{param.name}`: expected {param.expected}, got {json.dumps(value)}")
        args.append(value)
    return args


def fail(kind: ErrorKind, message: str) -> Err:
    return Err(CallError(kind=kind, message=message, traceback=None, origin=None))


class Describe(exports.Describe):
    def describe(self) -> Description:
        return Description(
            resources=[PY_CONFIG],
            functions=[
                FunctionSpec(
                    name=f.name,
                    resource=PY_CONFIG.name,
                    module="app",
                    is_async=False,
                    http_method=None,
                    http_path=None,
                )
                for f in FUNCTIONS.values()
            ],
        )


class Invoke(exports.Invoke):
    def invoke(self, function: str, input: str) -> str:
        target = FUNCTIONS.get(function)
        if target is None:
            known = ", ".join(FUNCTIONS)
            raise fail(ErrorKind.UNKNOWN_FUNCTION, f"no function `{function}` in this component (it provides: {known})")
        try:
            args = bind(target, input)
        except InvalidInput as e:
            raise fail(ErrorKind.INVALID_INPUT, str(e))
        try:
            result = target.run(*args)
        except Exception as e:  # a failure of the function itself
            raise fail(ErrorKind.USER_ERROR, f"`{function}`: {type(e).__name__}: {e}")
        return json.dumps(result, separators=(",", ":"))
