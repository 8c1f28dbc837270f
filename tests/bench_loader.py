"""Load a script of benchmarks/ as a module, once, for the tests that reuse its pieces."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache
def benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``escbridge_bench_<name>``."""
    spec = importlib.util.spec_from_file_location(
        f"escbridge_bench_{name}", BENCHMARKS / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
