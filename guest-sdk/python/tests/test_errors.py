"""A peer failure that a function lets through keeps its kind, message and origin.

Run by `cargo test` through tests/tests/python.rs, or alone:
`python -m unittest discover -s guest-sdk/python/tests`.
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flash_sdk  # noqa: E402
from flash_sdk import RemoteError, _runtime  # noqa: E402

ORIGIN = {"function": "hop_three", "resource": "web", "via": ["stage_two"]}

errors_cfg = flash_sdk.Endpoint(name="errors_cfg")


@errors_cfg
def lets_it_through(text: str) -> str:
    raise RemoteError("invalid-input", f"bad text: {text}", None, ORIGIN)


@errors_cfg
def fails_itself(text: str) -> str:
    raise ValueError(f"no {text}")


class PassedOnFailures(unittest.TestCase):
    def test_an_uncaught_remote_error_keeps_its_origin(self):
        with self.assertRaises(_runtime.CallFailure) as caught:
            _runtime.invoke("lets_it_through", json.dumps({"text": "x"}))
        failure = caught.exception
        self.assertEqual(str(failure.kind.value), "invalid-input")
        self.assertEqual(failure.message, "bad text: x")
        self.assertEqual(failure.origin, ORIGIN)

    def test_a_functions_own_failure_has_no_origin(self):
        with self.assertRaises(_runtime.CallFailure) as caught:
            _runtime.invoke("fails_itself", json.dumps({"text": "y"}))
        self.assertEqual(str(caught.exception.kind.value), "user-error")
        self.assertIsNone(caught.exception.origin)

    def test_remote_errors_without_origin(self):
        self.assertIsNone(RemoteError("timeout", "slow").origin)
        self.assertIsNone(RemoteError("timeout", "slow", None, {}).origin)


if __name__ == "__main__":
    unittest.main()
