"""Warming the imports beside the serving loop: the collector, the GIL and the requests (``warming``)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from loader import warming
from loader.pipeline import resolve
from mactuner_dev.harness import PYTHON, ROOT


def test_the_warming_thread_waits_while_a_request_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "GIVE_WAY_S", 60.0)
    requests = warming.Requests()
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (requests.give_way(), done.set()))
    with requests.answering():
        waiter.start()
        assert not done.wait(0.2)  # held for as long as the request is answered
    waiter.join(10)
    assert done.is_set()  # and let go when it is


def test_a_long_stretch_of_requests_no_longer_holds_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "GIVE_WAY_S", 0.0)  # the stretch is already older than the allowance
    requests = warming.Requests()
    with requests.answering(), requests.answering():
        requests.give_way()  # returns: a request may be waiting on the import itself
    assert requests.idle.is_set()


def test_only_the_warming_thread_gives_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "GIVE_WAY_S", 60.0)
    requests = warming.Requests()
    monkeypatch.setattr(warming, "REQUESTS", requests)
    other = threading.Thread(target=lambda: None)
    other.start()
    other.join()
    with requests.answering():
        assert warming._GiveWay(other.ident or 0).find_spec("json", None) is None  # no wait here


@pytest.mark.parametrize("idle", [True, False])
def test_warm_imports_with_the_collector_off_then_freezes_only_when_idle(
    monkeypatch: pytest.MonkeyPatch, idle: bool
) -> None:
    seen: dict[str, Any] = {}

    def imports(progress: Any = None) -> None:
        seen["collector on"] = gc.isenabled()
        seen["first finder"] = type(sys.meta_path[0])

    monkeypatch.setattr(resolve, "warm_imports", imports)
    monkeypatch.setattr(warming, "_link_torch_without_the_gil", lambda: None)
    gc.unfreeze()
    try:
        assert warming.warm(is_idle=lambda: idle)
        assert seen == {"collector on": False, "first finder": warming._GiveWay}
        assert gc.isenabled()
        assert not any(isinstance(f, warming._GiveWay) for f in sys.meta_path)
        assert (gc.get_freeze_count() > 0) is idle  # a started load's objects stay collectable
    finally:
        gc.unfreeze()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_libtorch_is_linked_before_torch_is_imported_and_torch_still_works() -> None:
    code = (
        "import sys; from loader import warming; warming._link_torch_without_the_gil(); "
        "maps = open('/proc/self/maps').read(); print('torch' in sys.modules, 'libtorch_cpu' in maps); "
        "import torch; print(float(torch.arange(4.0).sum()))"
    )
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "6.0"]


def test_a_request_arriving_late_in_a_stretch_is_given_way_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "GIVE_WAY_S", 0.2)
    requests = warming.Requests()
    with requests.answering():  # a slow request (a list of huge configs)
        time.sleep(0.3)
        requests.give_way()  # its allowance is spent: no wait
        assert requests.given < 0.1
        with requests.answering():  # a status request arriving now
            requests.give_way()
        assert requests.given >= 0.15  # waited for the new request's allowance


def test_requests_that_never_stop_cannot_starve_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warming, "GIVE_WAY_S", 60.0)
    monkeypatch.setattr(warming, "GIVE_WAY_TOTAL_S", 0.3)
    requests = warming.Requests()
    with requests.answering():
        for _ in range(5):
            requests.give_way()
    assert 0.25 <= requests.given < 1.0  # the whole warming gives way 0.3 s at most
