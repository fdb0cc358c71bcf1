"""The first load after a server starts: the imports are a named, moving step of "preparing"."""

from __future__ import annotations

from typing import Any

from .conftest import Api, SocketWatcher, job_of


def test_a_load_right_after_start_shows_the_imports_as_a_moving_step(live_server_factory: Any) -> None:
    """Without warmed imports the first load names the import step and the bar moves during it."""
    server = live_server_factory(MACTUNER_WARM_IMPORTS="0")
    watcher = SocketWatcher(server)
    watcher.next()
    status, body = Api(server).call("POST", "/api/load", {"model": "tiny", "device": "cpu"})
    assert status == 202
    final = watcher.until(lambda m: job_of(m).get("id") == body["job"]["id"] and not job_of(m)["active"], 120)
    assert job_of(final)["state"] == "succeeded"
    preparing = [job_of(m) for m in watcher.messages if job_of(m).get("stage") == "preparing"]
    importing = [j for j in preparing if "라이브러리" in j["message"]]
    assert importing, [j["message"] for j in preparing]
    assert len({j["percent"] for j in preparing}) >= 3, "the bar moves while preparing"
    watcher.close()
