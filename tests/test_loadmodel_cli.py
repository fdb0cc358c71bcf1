"""`manage.py loadmodel` as a user runs it: real subprocesses, real signals, a real database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PYTHON, ROOT, migrate, server_env


@pytest.fixture
def env(models_root: Path, tmp_path: Path) -> dict[str, str]:
    env = server_env(models_root, tmp_path / "cli.sqlite3")
    migrate(env)
    return env


def loadmodel(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "loadmodel", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def jobs(env: dict[str, str]) -> list[dict[str, object]]:
    with sqlite3.connect(env["MACTUNER_SQLITE_PATH"]) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("select * from loader_loadjob order by id")]


def test_success_prints_json_and_bars_and_records_a_cli_job(env: dict[str, str]) -> None:
    result = loadmodel(env, "tiny", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["state"] == "succeeded" and snapshot["percent"] == 100 and snapshot["source"] == "cli"
    assert snapshot["metadata"]["architecture"] == "LlamaForCausalLM" and snapshot["timings"]["total"] > 0
    assert "Loading checkpoint shards" in result.stderr and "shard 3/3" in result.stderr
    assert "✅ 모델 로드 완료!" in result.stderr
    # The total said is Enter to ready (the process's whole life so far), never the stages' sum alone.
    assert snapshot["command_s"] >= snapshot["wall_s"] >= snapshot["timings"]["total"]
    assert f"cpu, {snapshot['dtype']}, {snapshot['command_s']:.2f}s)" in result.stderr
    (job,) = jobs(env)
    assert job["source"] == "cli" and job["state"] == "succeeded"


def test_folder_path_is_accepted(env: dict[str, str], models_root: Path) -> None:
    result = loadmodel(env, str(models_root / "tied"))
    assert result.returncode == 0, result.stderr
    assert jobs(env)[0]["model_name"] == "tied"


def test_list_prints_the_dashboards_models(env: dict[str, str]) -> None:
    result = loadmodel(env, "--list")
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert result.returncode == 0 and {"tiny", "tied", "medium"} <= set(names)


def test_broken_model_exits_1_with_the_plain_message(env: dict[str, str], broken: Path) -> None:
    (broken / "config.json").write_text("{oops")
    result = loadmodel(env, str(broken))
    assert result.returncode == 1
    assert "❌ 오류: config.json을 읽을 수 없습니다" in result.stderr
    (job,) = jobs(env)
    assert (
        job["state"] == "failed"
        and job["error_code"] == "config_unreadable"
        and "JSONDecodeError" in job["error_detail"]
    )


def test_unknown_name_exits_2(env: dict[str, str]) -> None:
    result = loadmodel(env, "no-such-model")
    assert result.returncode == 2 and "모델을 찾을 수 없습니다" in result.stderr
    assert jobs(env) == []


def test_busy_exits_2_and_starts_nothing(env: dict[str, str]) -> None:
    first = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c",
         "from loader.jobs import services; j = services.job_start(model_name='medium', model_path='/x', device='cpu', dtype='auto', source='web'); print(j.pk)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job_id = int(first.stdout.split()[-1])
    with sqlite3.connect(env["MACTUNER_SQLITE_PATH"]) as db:  # owned by this live process: not an orphan
        db.execute("update loader_loadjob set owner_pid=? where id=?", (os.getpid(), job_id))
    result = loadmodel(env, "tiny")
    assert result.returncode == 2 and "이미 다른 모델(medium)을 로드하는 중입니다" in result.stderr
    assert len(jobs(env)) == 1


def tagged(tag: str) -> list[int]:
    """Processes (the CLI and its model host) started with ``MACTUNER_TEST_TAG=tag``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"MACTUNER_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_gone(tag: str, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_weights_cancels_the_job_with_exit_130(env: dict[str, str], signum: int) -> None:
    tag = f"weights-{signum}-{os.getpid()}"
    env = dict(env, MACTUNER_READ_LIMIT_MBPS="5", MACTUNER_TEST_TAG=tag)
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "medium"], cwd=ROOT, env=env,
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = jobs(env) if Path(env["MACTUNER_SQLITE_PATH"]).exists() else []
        if rows and rows[0]["stage"] == "weights":
            break
        time.sleep(0.1)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "로드가 취소되었습니다" in err
    assert jobs(env)[0]["state"] == "cancelled"
    assert wait_gone(tag) == [], "the model host goes with the command"


@pytest.mark.parametrize(("delay", "signum"), [(0.3, signal.SIGINT), (1.0, signal.SIGTERM), (3.0, signal.SIGINT)])
def test_a_signal_at_any_moment_exits_130_without_a_traceback_or_a_host(
    env: dict[str, str], delay: float, signum: int
) -> None:
    """0.3 s: Django is still setting up; 1 s: the host imports; 3 s: the job may exist (preparing)."""
    tag = f"early-{delay}-{os.getpid()}"
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "medium"], cwd=ROOT, env=dict(env, MACTUNER_TEST_TAG=tag),
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "로드가 취소되었습니다" in err
    assert not [row for row in jobs(env) if row["state"] in ("queued", "running")]
    assert wait_gone(tag) == [], "no model host is left behind"


def test_the_first_line_is_a_named_step_before_any_job(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "tiny", "--lang", "en"], cwd=ROOT, env=env,
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    _out, rest = proc.communicate(timeout=120)
    assert first.startswith("Preparing: importing libraries (") and " s)" in first, first
    assert proc.returncode == 0, rest


def test_json_output_of_a_refusal_is_json(env: dict[str, str]) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "loadmodel", "no-such-model", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert body["exit"] == 2 and "no-such-model" in body["error"]
