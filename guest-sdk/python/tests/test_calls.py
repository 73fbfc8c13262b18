"""The source scan behind `makes_remote_calls` (flash_sdk._calls)."""

import os
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flash_sdk._calls import scan_source, scan_tree  # noqa: E402


def scan(source: str) -> dict:
    graph: dict = {}
    scan_source(textwrap.dedent(source), graph)
    return graph


def reaches(graph: dict, start: str, targets: set[str]) -> bool:
    """What the build computes (flash_manifest::peer_calls), for the tests' sake."""
    seen, todo = {start}, [start]
    while todo:
        node = graph.get(todo.pop())
        if node is None:
            continue
        if node["computed_peer_call"] or node["names"] & targets:
            return True
        for name in node["names"]:
            if name in graph and name not in seen:
                seen.add(name)
                todo.append(name)
    return False


class ScanTest(unittest.TestCase):
    def test_direct_helper_alias_class_and_literal_calls(self):
        graph = scan(
            """
            from flash_sdk import Endpoint, peer_call
            from .other import embed as fast_embed

            api = Endpoint(name="api", cpu="cpu3c-1-2")
            shortcut = fast_embed

            @api.post("/a")
            async def direct(text: str):
                return await embed(text)

            async def helper(text):
                return await shortcut(text)

            @api.post("/b")
            async def via_helper(text: str):
                return await helper(text)

            class Model:
                def __init__(self):
                    self.v = summarize("x")

            def uses_class():
                return Model()

            async def by_name():
                return await peer_call("word_stats", text="hi")

            async def computed(name):
                return await peer_call(name, text="hi")

            def lonely(x):
                return len(x)
            """
        )
        remote = {"embed", "summarize", "word_stats"}
        self.assertTrue(reaches(graph, "direct", remote))
        self.assertTrue(reaches(graph, "via_helper", remote), graph["helper"])
        self.assertTrue(reaches(graph, "uses_class", remote))
        self.assertTrue(reaches(graph, "by_name", remote))
        self.assertFalse(reaches(graph, "by_name", {"other"}))
        self.assertTrue(graph["computed"]["computed_peer_call"])
        self.assertFalse(reaches(graph, "lonely", remote))

    def test_tree_output_is_sorted_json_and_skips_tool_folders(self):
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "pkg"))
            os.makedirs(os.path.join(root, "venv"))
            with open(os.path.join(root, "pkg", "app.py"), "w") as f:
                f.write("def b():\n    return a()\n\ndef a():\n    return 1\n")
            with open(os.path.join(root, "venv", "junk.py"), "w") as f:
                f.write("def junk(:\n")  # would not parse: never read
            out = scan_tree(root)
        self.assertEqual(list(out["functions"]), ["a", "b"])
        self.assertEqual(out["functions"]["b"], {"names": ["a"], "computed_peer_call": False})

    def test_a_module_that_does_not_parse_is_an_error(self):
        with self.assertRaises(SyntaxError):
            scan("def broken(:\n")


if __name__ == "__main__":
    unittest.main()
