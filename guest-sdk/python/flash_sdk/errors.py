"""Typed call failures: the WIT `error-kind`s (`wit/flash.wit`) as Python values.

A call to a function on another endpoint fails with `RemoteError`, whose `kind` says why:
the callee raised (`user-error`), the arguments did not fit (`invalid-input`), the endpoint
could not be reached (`unavailable`), and so on. The names and meanings are the same in
every Flash SDK (Rust's `flash_sdk::ErrorKind`, JavaScript's `RemoteError.kind`).
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """Why a call failed. Values are the WIT spellings, so `kind == "timeout"` works."""

    INVALID_INPUT = "invalid-input"
    """The input could not be decoded into the function's arguments."""
    UNKNOWN_FUNCTION = "unknown-function"
    """No function of that name exists in the app."""
    USER_ERROR = "user-error"
    """The function ran and raised (or returned an error of its own)."""
    UNAVAILABLE = "unavailable"
    """The endpoint that serves the function could not be reached or found."""
    TIMEOUT = "timeout"
    """The call did not finish within its deadline."""
    REMOTE_FAILURE = "remote-failure"
    """The endpoint answered with a failure that could not be classified further."""
    CALL_DEPTH_EXCEEDED = "call-depth-exceeded"
    """A chain of calls went deeper than the host allows (a likely call cycle)."""
    INTERNAL = "internal"
    """The component trapped or the host failed; the message says which."""

    def __str__(self) -> str:
        return self.value


class RemoteError(Exception):
    """A call to another function failed.

    `kind` is an `ErrorKind`, `message` the callee's message, and `traceback` where the
    failure happened when the callee reported it (a Python traceback, a Rust or JavaScript
    stack), else None. `origin` says where a failure that came back through peer calls
    began: `{"function": …, "resource": …, "via": [functions in between]}`, else None.
    Left uncaught, it fails the calling function with the same kind and origin.
    """

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        traceback: str | None = None,
        origin: dict | None = None,
    ):
        try:
            self.kind = ErrorKind(kind)
        except ValueError:
            self.kind = ErrorKind.INTERNAL
            message = f"{kind}: {message}"
        self.message = message
        self.traceback = traceback or None
        self.origin = origin or None
        super().__init__(f"{self.kind.value}: {message}")
