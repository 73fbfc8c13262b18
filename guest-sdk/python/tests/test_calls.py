"""What a call does inside a component, run in plain CPython: arguments bound to the
signature, results encoded, exceptions mapped to WIT error kinds, async functions driven,
and calls to other resource configs sent through the transport (the `peer` import).

`_runtime.invoke` is exactly what the component's `invoke` export runs (`_component`
only converts `CallFailure` into the WIT `call-error`), so these tests cover the SDK's side
of a job or request without building a component. Run by `cargo test` with the Endpoint
rules, or alone: `python -m unittest discover -s guest-sdk/python/tests`.
"""

import asyncio
import dataclasses
import enum
import inspect
import json
import os
import sys
import unittest
from typing import Optional
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flash_sdk  # noqa: E402
from flash_sdk import _binding, _runtime  # noqa: E402

here = flash_sdk.Endpoint(name="calls_here", cpu="cpu3c-1-2")
there = flash_sdk.Endpoint(name="calls_there", cpu="cpu3c-1-2")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    color: Color = Color.RED


@here
def add(a: int, b: int) -> int:
    return a + b


@here
def scale(factor: float, values: list[float], label: Optional[str] = None) -> dict:
    return {"label": label, "values": [factor * v for v in values]}


@here
def options(*, flag: bool = False, limit: int = 10) -> list:
    return [flag, limit]


@here
def spread(first, *rest, **named) -> dict:
    return {"first": first, "rest": list(rest), "named": named}


@here
def counts(table: dict[str, int]) -> int:
    return sum(table.values())


@here
def perimeter(shape: Shape) -> dict:
    return {"name": shape.name, "points": len(shape.points), "color": shape.color, "xs": {p.x for p in shape.points}}


@here
def origin() -> Point:
    return Point(0)


@here
def not_a_number() -> float:
    return float("nan")


@here
def broken(n: int) -> int:
    return [1, 2][n]


@here
def remote_failure() -> None:
    raise flash_sdk.RemoteError("timeout", "the peer took too long", "remote traceback")


@here
async def gathered(n: int) -> list:
    await asyncio.sleep(0)
    return list(await asyncio.gather(*(add(i, i) for i in range(n))))


leftovers = []


@here
async def leaves_a_task() -> str:
    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            leftovers.append("cancelled")

    asyncio.get_running_loop().create_task(forever())
    await asyncio.sleep(0)
    return "done"


@here
async def slow_async_failure() -> None:
    await asyncio.sleep(0)
    raise KeyError("missing")


@there
def far_away(text: str, times: int = 1) -> str:
    return text * times


@here
async def calls_far_away(text: str) -> str:
    return await far_away(text, times=2)


@here
class Counter:
    def increment(self, by: int = 1) -> int:
        return by + 1

    @staticmethod
    def describe(verbose: bool) -> str:
        return "verbose" if verbose else "short"


def invoke(name, payload):
    return json.loads(_runtime.invoke(name, json.dumps(payload) if not isinstance(payload, str) else payload))


def failure(name, payload):
    """The (kind, message, traceback) of a failed invoke."""
    text = json.dumps(payload) if not isinstance(payload, str) else payload
    try:
        _runtime.invoke(name, text)
    except _runtime.CallFailure as f:
        return str(f.kind), f.message, f.traceback
    raise AssertionError(f"{name}({text}) did not fail")


class Arguments(unittest.TestCase):
    def test_named_and_positional(self):
        self.assertEqual(invoke("add", {"a": 1, "b": 2}), 3)
        self.assertEqual(invoke("add", [1, 2]), 3)

    def test_none_means_no_arguments(self):
        for payload in ["", "  ", "null", {}, {"__empty": True}]:
            with self.subTest(payload=payload):
                self.assertEqual(invoke("options", payload), [False, 10])

    def test_missing_surplus_and_unknown_arguments_name_the_argument(self):
        self.assertEqual(failure("add", {"a": 1})[:2], ("invalid-input", "`add`: missing argument `b`"))
        self.assertEqual(
            failure("add", {"a": 1, "b": 2, "c": 3})[:2],
            ("invalid-input", "`add`: unexpected argument `c` (its arguments: `a`, `b`)"),
        )
        self.assertEqual(
            failure("add", [1, 2, 3])[:2],
            ("invalid-input", "`add`: takes 2 positional argument(s), got 3"),
        )

    def test_mistyped_arguments_name_the_argument_and_the_type(self):
        self.assertEqual(
            failure("add", {"a": "1", "b": 2})[:2],
            ("invalid-input", '`add`: argument `a`: expected int, got "1"'),
        )
        # JSON booleans are not integers, although Python's bools are.
        self.assertEqual(failure("add", {"a": True, "b": 2})[1], "`add`: argument `a`: expected int, got true")
        self.assertEqual(
            failure("scale", {"factor": 2, "values": [1, "x"]})[1],
            '`scale`: argument `values`, item 1: expected float, got "x"',
        )
        self.assertEqual(
            failure("counts", {"table": {"a": 1, "b": 1.5}})[1],
            "`counts`: argument `table`, key `b`: expected int, got 1.5",
        )

    def test_numbers_convert_where_nothing_is_lost(self):
        self.assertEqual(invoke("add", {"a": 2.0, "b": 1}), 3)
        self.assertEqual(invoke("scale", {"factor": 2, "values": [1]}), {"label": None, "values": [2.0]})

    def test_optional_accepts_null(self):
        self.assertEqual(invoke("scale", {"factor": 1, "values": [], "label": None})["label"], None)
        self.assertEqual(invoke("scale", {"factor": 1, "values": [], "label": "x"})["label"], "x")

    def test_keyword_only_and_variadic_parameters(self):
        self.assertEqual(invoke("options", {"limit": 3}), [False, 3])
        self.assertEqual(invoke("spread", [1, 2, 3]), {"first": 1, "rest": [2, 3], "named": {}})
        self.assertEqual(invoke("spread", {"first": 1, "x": 2}), {"first": 1, "rest": [], "named": {"x": 2}})

    def test_dataclasses_are_built_from_objects_recursively(self):
        shape = {"name": "tri", "points": [{"x": 1, "y": 2}, {"x": 3}], "color": "blue"}
        self.assertEqual(
            invoke("perimeter", {"shape": shape}),
            {"name": "tri", "points": 2, "color": "blue", "xs": [1, 3]},
        )
        self.assertEqual(
            failure("perimeter", {"shape": {"name": "t", "points": [{"x": 1, "z": 0}]}})[1],
            "`perimeter`: argument `shape`, field `points`, item 0: expected Point without field `z`, "
            'got {"x": 1, "z": 0}',
        )
        self.assertEqual(
            failure("perimeter", {"shape": {"points": []}})[1],
            '`perimeter`: argument `shape`: expected Shape with field `name`, got {"points": []}',
        )
        self.assertEqual(
            failure("perimeter", {"shape": {"name": "t", "points": [], "color": "green"}})[1],
            '`perimeter`: argument `shape`, field `color`: expected one of "red", "blue", got "green"',
        )

    def test_payloads_that_are_not_arguments(self):
        kind, message, _ = failure("add", "{not json")
        self.assertEqual(kind, "invalid-input")
        self.assertTrue(message.startswith("`add`: input is not valid JSON: "), message)
        self.assertEqual(
            failure("add", "42")[1],
            "`add`: input must be a JSON object of named arguments or an array of positional "
            "arguments, got a number",
        )

    def test_an_unknown_function_lists_the_known_ones(self):
        kind, message, _ = failure("nope", {})
        self.assertEqual(kind, "unknown-function")
        self.assertTrue(message.startswith("no function `nope` in this component (it provides: "), message)
        self.assertIn("add", message)


class Results(unittest.TestCase):
    def test_dataclasses_enums_and_sets_become_json(self):
        self.assertEqual(invoke("origin", {}), {"x": 0, "y": 0})

    def test_a_value_json_cannot_express_is_a_user_error(self):
        kind, message, _ = failure("not_a_number", {})
        self.assertEqual(kind, "user-error")
        self.assertTrue(message.startswith("`not_a_number` returned a value that is not JSON"), message)


class Failures(unittest.TestCase):
    def test_an_exception_is_a_user_error_with_the_app_traceback(self):
        kind, message, traceback = failure("broken", {"n": 5})
        self.assertEqual((kind, message), ("user-error", "IndexError: list index out of range"))
        self.assertTrue(traceback.startswith("Traceback (most recent call last):\n"), traceback)
        self.assertIn("test_calls.py", traceback)
        self.assertIn("return [1, 2][n]", traceback)
        self.assertTrue(traceback.rstrip().endswith("IndexError: list index out of range"), traceback)
        # The SDK's own frames are left out.
        self.assertNotIn("_runtime.py", traceback)

    def test_an_uncaught_remote_error_keeps_its_kind_and_traceback(self):
        self.assertEqual(
            failure("remote_failure", {}),
            ("timeout", "the peer took too long", "remote traceback"),
        )

    def test_an_async_exception_is_a_user_error(self):
        kind, message, traceback = failure("slow_async_failure", {})
        self.assertEqual((kind, message), ("user-error", "KeyError: 'missing'"))
        self.assertIn("slow_async_failure", traceback)


class AsyncFunctions(unittest.TestCase):
    def test_async_functions_run_to_completion_with_tasks(self):
        self.assertEqual(invoke("gathered", {"n": 4}), [0, 2, 4, 6])

    def test_each_call_gets_a_working_loop(self):
        for _ in range(3):
            self.assertEqual(invoke("gathered", {"n": 2}), [0, 2])

    def test_tasks_left_running_are_cancelled_when_the_call_returns(self):
        leftovers.clear()
        self.assertEqual(invoke("leaves_a_task", {}), "done")
        self.assertEqual(leftovers, ["cancelled"])
        self.assertEqual(asyncio.all_tasks(_runtime.event_loop()), set())
        self.assertEqual(invoke("gathered", {"n": 1}), [0])


class Transport:
    """Records peer calls and answers them, like the host's `peer` import."""

    def __init__(self, answer=None, error=None):
        self.calls, self.answer, self.error = [], answer, error

    def call(self, function, payload):
        self.calls.append((function, json.loads(payload)))
        if self.error:
            raise self.error
        return json.dumps(self.answer)

    def emit(self, chunk):
        self.calls.append(("emit", json.loads(chunk)))


class PeerCalls(unittest.TestCase):
    def serve(self, resource, transport):
        """Runs the test as an instance of `resource` with `transport` installed."""
        env = mock.patch.dict(os.environ, {_runtime.RESOURCE_NAME_VAR: resource})
        env.start()
        self.addCleanup(env.stop)
        previous = _runtime._transport
        _runtime.install_transport(transport)
        self.addCleanup(_runtime.install_transport, previous)

    def test_a_function_of_another_config_goes_through_the_transport(self):
        transport = Transport(answer="abab")
        self.serve("calls_here", transport)
        self.assertEqual(invoke("calls_far_away", {"text": "ab"}), "abab")
        # Positional and keyword arguments travel as one object of named arguments.
        self.assertEqual(transport.calls, [("far_away", {"text": "ab", "times": 2})])

    def test_a_function_of_this_config_runs_in_place(self):
        transport = Transport()
        self.serve("calls_there", transport)
        self.assertEqual(invoke("far_away", {"text": "x", "times": 3}), "xxx")
        self.assertEqual(transport.calls, [])

    def test_a_peer_failure_keeps_its_kind(self):
        transport = Transport(error=flash_sdk.RemoteError("invalid-input", "`far_away`: missing argument `text`"))
        self.serve("calls_here", transport)
        kind, message, _ = failure("calls_far_away", {"text": "ab"})
        self.assertEqual((kind, message), ("invalid-input", "`far_away`: missing argument `text`"))

    def test_emit_sends_json_chunks(self):
        transport = Transport()
        self.serve("calls_here", transport)
        flash_sdk.emit({"step": 1})
        self.assertEqual(transport.calls, [("emit", {"step": 1})])
        self.assertEqual(flash_sdk.current_resource(), "calls_here")


class ClassEndpoints(unittest.TestCase):
    def test_the_method_is_selected_by_the_payload(self):
        self.assertEqual(invoke("Counter", {"method": "increment", "by": 4}), 5)
        self.assertEqual(invoke("Counter", {"method": "describe", "verbose": True}), "verbose")

    def test_a_missing_or_unknown_method_is_invalid_input(self):
        self.assertEqual(
            failure("Counter", {"by": 1})[:2],
            ("invalid-input", "`Counter`: name the method to call with `method` (one of: describe, increment)"),
        )
        self.assertEqual(
            failure("Counter", {"method": "reset"})[:2],
            ("invalid-input", "`Counter`: no public method `reset` (its methods: describe, increment)"),
        )


class Warm(unittest.TestCase):
    def test_after_warm_a_call_needs_no_signature_or_type_hints(self):
        # What a component does while it is pre-initialised; a fresh instance then binds
        # arguments without inspecting anything.
        _runtime.warm()
        with mock.patch.object(inspect, "signature", side_effect=AssertionError("signature")), \
                mock.patch.object(_binding.typing, "get_type_hints", side_effect=AssertionError("hints")):
            self.assertEqual(invoke("add", [1, 2]), 3)
            self.assertEqual(invoke("perimeter", {"shape": {"name": "s", "points": [{"x": 2}]}})["xs"], [2])
            self.assertEqual(invoke("Counter", {"method": "increment"}), 2)
            self.assertEqual(invoke("Counter", {"method": "describe", "verbose": False}), "short")


if __name__ == "__main__":
    unittest.main()
