"""The benchmark scripts keep up with the library: each one starts (``--help``), and the
kernels they build around the dataplane's (timing or counting its tool calls) have every
handler the real one has. No root: nothing is measured here (figures are bench/'s, never a
test's)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from calico_lib.dataplane import runner
from calico_lib.dataplane.kernel import Kernel, real_kernel

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # each script imports the library afresh: seconds apiece
@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_bench_script_starts(script: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_the_policy_bench_times_a_kernel_with_every_handler() -> None:
    kernel = _load("policy").timed_kernel({})
    assert isinstance(kernel, Kernel)
    real = real_kernel()
    for f in dataclasses.fields(Kernel):
        assert getattr(kernel, f.name) is not None, f.name
    assert sorted(kernel.iptables) == sorted(real.iptables)


def test_the_scale_bench_counts_kernel_reads_through_the_dataplane(monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(runner, "run", lambda argv, *a, **k: calls.append(list(argv)) or "")
    counter = _load("scale").ReadCounter()
    kernel = real_kernel(counter)
    kernel.ipsets.save()
    kernel.iptables[4].save("filter")
    assert counter.reads == 2
    assert [c[0] for c in calls] == ["ipset", "iptables-save"]
