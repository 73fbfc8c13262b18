"""What `flash build` asks the app's modules before it builds the component.

`python -m flash_sdk._build calls` prints, as one JSON line, what each function of the
Python files under the working directory mentions (read, not imported; see
`flash_sdk._calls`), from which the build decides which configs call peers.

`python -m flash_sdk._build modules <module>...` imports the modules (with the host's
Python, the project directory as working directory) and prints one JSON line:
`{"dependencies": [...], "system_dependencies": [...]}`, every `Endpoint(dependencies=...)`
they declare, so that the build can install them before componentize-py imports the
modules again inside the component. An import error is printed with its traceback and
exits with status 1.
"""

from __future__ import annotations

import json
import sys
import traceback

from . import _runtime


def main(argv: list[str]) -> int:
    if argv == ["calls"]:
        from ._calls import scan_tree

        print(json.dumps(scan_tree(".")))
        return 0
    if len(argv) < 1 or argv[0] != "modules":
        print(
            "usage: python -m flash_sdk._build modules <module>... | calls",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, ".")
    for module in argv[1:]:
        try:
            _runtime.load_modules([module])
        except Exception:
            print(f"importing module `{module}` failed:", file=sys.stderr)
            traceback.print_exc()
            return 1
    report = {
        "dependencies": _runtime.dependencies(),
        "system_dependencies": _runtime.system_dependencies(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
