"""The plugin's background programmer: Docker calls never wait for the dataplane, and
requests that arrive during an apply are served together by the next one."""

from __future__ import annotations

import threading
import time

from calico_lib.errors import CalicoError
from calico_lib.plugin.server import Programmer


class Report:
    def summary(self) -> str:
        return "ok"


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_requests_during_an_apply_are_merged_into_one_more() -> None:
    started, release = threading.Event(), threading.Event()
    calls = []

    def apply() -> Report:
        calls.append(time.monotonic())
        started.set()
        release.wait(5)
        return Report()

    programmer = Programmer(apply)
    try:
        programmer.request()
        assert started.wait(5)
        begin = time.perf_counter()
        for _ in range(50):  # 50 Joins while the first apply runs
            programmer.request()
        assert time.perf_counter() - begin < 0.5  # nobody waited for the apply
        release.set()
        wait_until(lambda: programmer.done == 2)
        time.sleep(0.2)
        assert len(calls) == 2  # the first, then one for all 50
    finally:
        release.set()
        programmer.halt()


def test_a_failed_apply_is_retried(monkeypatch) -> None:
    outcomes = [CalicoError("etcd away"), None]

    def apply() -> Report:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return Report()

    monkeypatch.setattr(Programmer, "RETRY", 0.05)
    programmer = Programmer(apply)
    try:
        programmer.request()
        wait_until(lambda: programmer.done == 2)
        assert outcomes == []
    finally:
        programmer.halt()
