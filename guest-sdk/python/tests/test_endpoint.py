"""`flash_sdk.Endpoint` follows runpod-flash 1.21's rules with its exact errors.

Every rule is checked against the real `runpod_flash` package from PyPI (pinned in
tests/requirements.txt): the same arguments must give the same exception type and text.
Options Flash refuses are checked with Flash's own texts. Run by `cargo test` through
tests/tests/all/python.rs, or alone: `python -m unittest discover -s guest-sdk/python/tests`.
"""

import asyncio
import os
import sys
import unittest
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flash_sdk  # noqa: E402
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # runpod-flash's deprecation notice
    import runpod_flash  # noqa: E402


def outcome(make):
    """(exception type name, message) of `make()`, or ("ok", None)."""
    try:
        make()
    except Exception as e:  # noqa: BLE001 - the exception itself is what is compared
        return type(e).__name__, str(e)
    return "ok", None


def both(test, make):
    """Runs `make(sdk)` with runpod_flash and flash_sdk and checks they agree; returns
    flash_sdk's outcome."""
    theirs = outcome(lambda: make(runpod_flash))
    ours = outcome(lambda: make(flash_sdk))
    test.assertEqual(ours, theirs)
    return ours


class ConstructorRules(unittest.TestCase):
    def test_gpu_and_cpu_are_mutually_exclusive(self):
        result = both(
            self,
            lambda m: m.Endpoint(name="w", gpu=m.GpuGroup.AMPERE_48, cpu="cpu3c-1-2"),
        )
        self.assertEqual(result[0], "ValueError")

    def test_workers_forms(self):
        for workers, expected in [(None, (0, 1)), (3, (0, 3)), ((1, 4), (1, 4)), ((2, 2), (2, 2))]:
            for m in (runpod_flash, flash_sdk):
                e = m.Endpoint(name="w", cpu="cpu3c-1-2", workers=workers)
                self.assertEqual((e.workers_min, e.workers_max), expected, (m.__name__, workers))

    def test_bad_workers_are_rejected_with_the_same_errors(self):
        for workers in [(3, 1), -1, (-1, 2), (0, -1), "3", (1, 2, 3)]:
            with self.subTest(workers=workers):
                result = both(self, lambda m: m.Endpoint(name="w", cpu="cpu3c-1-2", workers=workers))
                self.assertNotEqual(result[0], "ok")

    def test_unknown_keyword_suggests_the_right_one(self):
        # runpod-flash leaves the suggestion to the Python version (3.12+ adds one);
        # flash_sdk always makes it.
        self.assertEqual(
            outcome(lambda: runpod_flash.Endpoint(name="w", wrkers=2))[0], "TypeError"
        )
        self.assertEqual(
            outcome(lambda: flash_sdk.Endpoint(name="w", wrkers=2)),
            ("TypeError", "Endpoint() got an unexpected keyword argument 'wrkers'. Did you mean 'workers'?"),
        )

    def test_scaler_type_defaults_by_kind(self):
        for m in (runpod_flash, flash_sdk):
            queue = m.Endpoint(name="q", cpu="cpu3c-1-2")

            @queue
            def f():
                return 1

            api = m.Endpoint(name="lb", cpu="cpu3c-1-2")

            @api.get("/x")
            def g():
                return 1

            self.assertEqual(queue.scaler_type.value, "QUEUE_DELAY", m.__name__)
            self.assertEqual(api.scaler_type.value, "REQUEST_COUNT", m.__name__)
            explicit = m.Endpoint(name="e", cpu="cpu3c-1-2", scaler_type=m.ServerlessScalerType.REQUEST_COUNT)
            self.assertEqual(explicit.scaler_type.value, "REQUEST_COUNT", m.__name__)

    def test_enums_carry_runpod_ids(self):
        for name in ("AMPERE_48", "ADA_24", "AMPERE_80", "ANY"):
            self.assertEqual(flash_sdk.GpuGroup[name].value, runpod_flash.GpuGroup[name].value)
        for name in runpod_flash.GpuType.__members__:
            self.assertEqual(flash_sdk.GpuType[name].value, runpod_flash.GpuType[name].value)
        for name in runpod_flash.CpuInstanceType.__members__:
            self.assertEqual(
                flash_sdk.CpuInstanceType[name].value, runpod_flash.CpuInstanceType[name].value
            )
        self.assertEqual(
            set(flash_sdk.ServerlessScalerType.__members__),
            set(runpod_flash.ServerlessScalerType.__members__),
        )


class RouteRules(unittest.TestCase):
    def api(self, m):
        api = m.Endpoint(name="api", cpu="cpu3c-1-2")

        @api.get("/items")
        def items():
            return []

        return api

    def test_paths_must_start_with_a_slash(self):
        result = both(self, lambda m: self.api(m).post("items")(lambda: 1))
        self.assertEqual(result[0], "ValueError")

    def test_reserved_paths(self):
        for path in ("/ping", "/execute"):
            result = both(self, lambda m: self.api(m).post(path)(lambda: 1))
            self.assertEqual(result[0], "ValueError")
            self.assertIn("reserved", result[1])

    def test_duplicate_method_and_path(self):
        def duplicate(m):
            api = self.api(m)

            @api.get("/items")
            def items():
                return []

        result = both(self, duplicate)
        self.assertEqual(result, ("ValueError", "duplicate route: GET /items (already registered to 'items')"))

    def test_same_path_with_another_method_is_fine(self):
        self.assertEqual(both(self, lambda m: self.api(m).post("/items")(lambda: 1)), ("ok", None))

    def test_queue_and_routes_do_not_mix(self):
        result = both(self, lambda m: self.api(m)(lambda: 1))
        self.assertEqual(result[0], "ValueError")

        def routes_after_queue(m):
            ep = m.Endpoint(name="q", cpu="cpu3c-1-2")
            ep(lambda: 1)
            ep.get("/x")(lambda: 1)

        self.assertEqual(both(self, routes_after_queue)[0], "ValueError")


class RefusedOptions(unittest.TestCase):
    def test_options_without_meaning_for_a_component_are_refused_with_why(self):
        for option, value in [
            ("image", "me/worker:1"),
            ("template", object()),
            ("volume", flash_sdk.NetworkVolume(name="models")),
            ("system_dependencies", ["ffmpeg"]),
            ("max_concurrency", 4),
            ("id", "abc123"),
        ]:
            with self.subTest(option=option):
                with self.assertRaises(ValueError) as raised:
                    flash_sdk.Endpoint(name="w", **{option: value})
                self.assertTrue(
                    str(raised.exception).startswith(f"Endpoint({option}=...) is not supported by Flash: "),
                    str(raised.exception),
                )

    def test_their_defaults_are_accepted(self):
        flash_sdk.Endpoint(name="w", max_concurrency=1, image=None, volume=None)


class Placement(unittest.TestCase):
    def test_platform_settings_are_carried_to_the_resource_config(self):
        ep = flash_sdk.Endpoint(
            name="gpu_worker",
            gpu=flash_sdk.GpuGroup.AMPERE_48,
            gpu_count=2,
            datacenter=[flash_sdk.DataCenter.EU_RO_1, "US-CA-2"],
            flashboot=False,
            min_cuda_version=flash_sdk.CudaVersion.V12_4,
        )
        spec = ep._resource_spec()
        self.assertEqual(spec["compute"]["gpu"]["gpu_count"], 2)
        self.assertEqual(
            spec["placement"],
            {
                "locations": ["EU-RO-1", "US-CA-2"],
                "min_cuda_version": "12.4",
                "container_disk_gb": None,
                "flashboot": False,
            },
        )
        # The same arguments are accepted by runpod-flash itself.
        runpod_flash.Endpoint(
            name="gpu_worker",
            gpu=runpod_flash.GpuGroup.AMPERE_48,
            gpu_count=2,
            datacenter=[runpod_flash.DataCenter.EU_RO_1, "US-CA-2"],
            flashboot=False,
            min_cuda_version=runpod_flash.CudaVersion.V12_4,
        )

    def test_defaults_leave_the_platform_its_defaults(self):
        spec = flash_sdk.Endpoint(name="w")._resource_spec()
        self.assertEqual(
            spec["placement"],
            {"locations": [], "min_cuda_version": None, "container_disk_gb": None, "flashboot": None},
        )

    def test_bad_values_are_refused_when_the_app_is_imported(self):
        for option, value in [("gpu_count", 0), ("min_cuda_version", "10.2"), ("datacenter", 5)]:
            with self.subTest(option=option):
                with self.assertRaises(ValueError):
                    flash_sdk.Endpoint(name="w", **{option: value})


class LocalCalls(unittest.TestCase):
    def test_calls_return_awaitables_for_sync_and_async_functions(self):
        ep = flash_sdk.Endpoint(name="calls", cpu="cpu3c-1-2")

        @ep
        def add(a: int, b: int = 2) -> int:
            return a + b

        other = flash_sdk.Endpoint(name="calls_async", cpu="cpu3c-1-2")

        @other
        async def double(x: int) -> int:
            return 2 * x

        async def main():
            return await add(1), await add(1, b=5), await double(21)

        self.assertEqual(asyncio.run(main()), (3, 6, 42))


if __name__ == "__main__":
    unittest.main()
