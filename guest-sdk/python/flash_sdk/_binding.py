"""Arguments in, results out: JSON payloads bound to Python signatures, and return values
encoded as JSON.

A payload is a JSON object of named arguments or an array of positional ones (the WIT
`payload`); `null`, an empty payload and RunPod's `{"__empty": true}` mean none. Binding
follows the function's signature exactly (defaults, keyword-only parameters, `*args`,
`**kwargs`) and converts each value to its type hint: `int` (not `bool`), `float`,
`str`, `bool`, `list[T]`, `tuple[...]`, `dict[str, T]`, `Optional[T]` / `T | None`,
unions, enums and dataclasses (built from JSON objects, recursively). Parameters without
a hint take any JSON value. Every mismatch is an `InvalidInput` that names the function
and the argument.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
import typing
from typing import Any, Callable


class InvalidInput(Exception):
    """The payload does not fit the function: reported as `invalid-input`."""


class NotJson(Exception):
    """A return value that JSON cannot express."""


class _Mismatch(Exception):
    def __init__(self, expected: str, value: Any, path: str = ""):
        self.expected = expected
        self.value = value
        self.path = path


def parse_payload(function: str, payload: str) -> dict[str, Any] | list[Any]:
    """The named (dict) or positional (list) arguments in `payload`."""
    if not payload.strip():
        return {}
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"`{function}`: input is not valid JSON: {e}") from None
    if value is None:
        return {}
    if isinstance(value, dict):
        if value.get("__empty") is True:
            value = {k: v for k, v in value.items() if k != "__empty"}
        return value
    if isinstance(value, list):
        return value
    raise InvalidInput(
        f"`{function}`: input must be a JSON object of named arguments or an array of "
        f"positional arguments, got {_json_type(value)}"
    )


class _Plan:
    """What binding needs to know of one callable: its parameters and their type hints.

    Computed once per function and kept (`plan`): `inspect.signature` and
    `typing.get_type_hints` cost more than the rest of a call. A component computes the
    plans of every registered function while it is pre-initialised (`_runtime.warm`), so a
    fresh instance finds them in its snapshot.
    """

    __slots__ = ("params", "hints", "positional", "var_positional", "var_keyword", "by_name")

    def __init__(self, function: Callable[..., Any], bound: bool):
        params = list(inspect.signature(function).parameters.values())
        self.params = params[1:] if bound else params
        self.hints = _type_hints(function)
        self.positional = [
            p for p in self.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        self.var_positional = next((p for p in self.params if p.kind == p.VAR_POSITIONAL), None)
        self.var_keyword = next((p for p in self.params if p.kind == p.VAR_KEYWORD), None)
        self.by_name = {
            p.name: p for p in self.params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }


_plans: dict[tuple[Any, bool], _Plan] = {}


def plan(target: Callable[..., Any], bound: bool | None = None) -> _Plan:
    """The binding plan of `target`. A bound method shares its function's plan (each call
    of a class endpoint binds a new instance; the signature stays); `bound=True` plans
    a method from its class, without an instance."""
    if bound is None:
        bound = inspect.ismethod(target)
    function = getattr(target, "__func__", target)
    key = (function, bound)
    found = _plans.get(key)
    if found is None:
        found = _plans[key] = _Plan(function, bound)
    return found


def warm(target: Callable[..., Any], bound: bool = False) -> None:
    """Plans `target` and every dataclass its type hints mention, ahead of calls."""
    pending = list(plan(target, bound).hints.values())
    seen: set[int] = set()
    while pending:
        hint = pending.pop()
        if id(hint) in seen:
            continue
        seen.add(id(hint))
        pending.extend(typing.get_args(hint))
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            pending.extend(_dataclass_plan(hint)[0].values())


def bind(
    function: str, target: Callable[..., Any], arguments: dict[str, Any] | list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Binds `arguments` to `target`'s signature, converting each to its type hint."""
    p = plan(target)
    params, hints, positional = p.params, p.hints, p.positional
    var_positional, var_keyword = p.var_positional, p.var_keyword

    values: dict[str, Any] = {}
    extra_args: list[Any] = []
    extra_kwargs: dict[str, Any] = {}
    if isinstance(arguments, list):
        if len(arguments) > len(positional) and var_positional is None:
            raise InvalidInput(
                f"`{function}`: takes {len(positional)} positional argument(s), got "
                f"{len(arguments)}"
            )
        for param, value in zip(positional, arguments):
            values[param.name] = value
        extra_args = arguments[len(positional):]
    else:
        by_name = p.by_name
        for key, value in arguments.items():
            param = by_name.get(key)
            if param is not None and param.kind != param.POSITIONAL_ONLY:
                values[key] = value
            elif var_keyword is not None:
                extra_kwargs[key] = value
            else:
                known = ", ".join(f"`{n}`" for n in by_name) or "none"
                raise InvalidInput(
                    f"`{function}`: unexpected argument `{key}` (its arguments: {known})"
                )

    # Surplus positional values fill `*args`, so every positional parameter before it is
    # passed by position; otherwise parameters are passed by name.
    by_position = bool(extra_args)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in params:
        hint = hints.get(param.name, Any)
        if param.kind == param.VAR_POSITIONAL:
            args.extend(_convert_argument(function, param.name, v, hint) for v in extra_args)
        elif param.kind == param.VAR_KEYWORD:
            for key, value in extra_kwargs.items():
                kwargs[key] = _convert_argument(function, key, value, hint)
        elif param.name in values:
            value = _convert_argument(function, param.name, values[param.name], hint)
            if param.kind == param.POSITIONAL_ONLY or (
                by_position and param.kind == param.POSITIONAL_OR_KEYWORD
            ):
                args.append(value)
            else:
                kwargs[param.name] = value
        elif param.default is param.empty:
            raise InvalidInput(f"`{function}`: missing argument `{param.name}`")
        elif param.kind == param.POSITIONAL_ONLY or (
            by_position and param.kind == param.POSITIONAL_OR_KEYWORD
        ):
            args.append(param.default)
    return args, kwargs


def _convert_argument(function: str, name: str, value: Any, hint: Any) -> Any:
    try:
        return convert(value, hint)
    except _Mismatch as m:
        where = f"argument `{name}`" + (f", {m.path}" if m.path else "")
        raise InvalidInput(
            f"`{function}`: {where}: expected {m.expected}, got {_show(m.value)}"
        ) from None


def convert(value: Any, hint: Any) -> Any:
    """`value` (decoded JSON) as `hint`, or `_Mismatch`."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return value
    if hint is None or hint is type(None):
        if value is not None:
            raise _Mismatch("null", value)
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or (types.UnionType is not None and origin is types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option)
            except _Mismatch:
                pass
        raise _Mismatch(_describe(hint), value)
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch(_describe(hint), value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("bool", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch("int", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch("float", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("str", value)
    if hint in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        container = origin or hint
        if not isinstance(value, list):
            raise _Mismatch(_describe(hint), value)
        args = typing.get_args(hint)
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _Mismatch(_describe(hint), value)
            return tuple(_item(v, a, f"item {i}") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_item(v, item, f"item {i}") for i, v in enumerate(value)]
        return items if container is list else container(items)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(_describe(hint), value)
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _item(v, item, f"key `{k}`") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(_show(m.value) for m in hint)
            raise _Mismatch(f"one of {allowed}", value) from None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(value, hint)
    validate = getattr(hint, "model_validate", None)
    if callable(validate):  # a pydantic model, when the app bundles pydantic
        try:
            return validate(value)
        except Exception as e:  # pydantic's ValidationError, without importing pydantic
            raise _Mismatch(f"{hint.__name__} ({e})", value) from None
    return value


def _item(value: Any, hint: Any, where: str) -> Any:
    try:
        return convert(value, hint)
    except _Mismatch as m:
        m.path = where + (f", {m.path}" if m.path else "")
        raise


def _dataclass(value: Any, cls: type) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(f"an object for {cls.__name__}", value)
    hints, fields = _dataclass_plan(cls)
    for key in value:
        if key not in fields:
            raise _Mismatch(f"{cls.__name__} without field `{key}`", value)
    kwargs = {}
    for name, field in fields.items():
        if name not in value:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise _Mismatch(f"{cls.__name__} with field `{name}`", value)
            continue
        kwargs[name] = _item(value[name], hints.get(name, Any), f"field `{name}`")
    return cls(**kwargs)


_dataclass_plans: dict[type, tuple[dict[str, Any], dict[str, dataclasses.Field]]] = {}


def _dataclass_plan(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """The type hints and init fields of dataclass `cls`, computed once."""
    found = _dataclass_plans.get(cls)
    if found is None:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        found = _dataclass_plans[cls] = (_type_hints(cls), fields)
    return found


def _type_hints(target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception:  # an unresolvable forward reference: fall back to no conversion
        return {}


def encode(function: str, value: Any) -> str:
    """`value` as compact JSON: dataclasses become objects, enums their values, tuples
    lists; anything else JSON cannot express is `NotJson`."""
    try:
        return json.dumps(value, default=_jsonable, allow_nan=False, separators=(",", ":"))
    except NotJson:
        raise
    except ValueError as e:  # NaN or infinity
        raise NotJson(f"`{function}` returned a value that is not JSON: {e}") from None
    except TypeError as e:
        raise NotJson(f"`{function}` returned a value that is not JSON: {e}") from None


def to_json_value(value: Any) -> Any:
    """`value` with dataclasses and enums replaced by plain JSON values (for peer calls)."""
    return json.loads(encode("argument", value))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value) if _is_json(value) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
