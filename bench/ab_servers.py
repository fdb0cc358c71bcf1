"""Two servers from two source trees, loading the same hot checkpoint in turn, beside plain.

    .venv/bin/python bench/ab_servers.py /path/to/tree-a /path/to/tree-b [--runs 40] [--params 500M]

For a change to the web path, whose effect (a few ms) is smaller than this VM's run-to-run drift:
both servers run at once (each its own daphne and database, same models folder), runs alternate
A, B (B, A on odd rounds), plain transformers in this process after each pair. Before every run
the shards are `cat` again; the page cache starts from one evict + sequential read (as web_path.py).
A tree is a git worktree (`git worktree add /tmp/base HEAD~1`, then link its `.venv` to this one).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

from common import OUT, checkpoint, evict, touch_all, warm

from mactuner_dev.harness import PYTHON, Api, LiveServer, SocketWatcher, job_of, server_env, wait_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", nargs=2, type=Path)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--params", default="500M")
    args = parser.parse_args()
    import django

    django.setup()  # LiveServer.wait_warm reads the start-up module's log line constant
    path = checkpoint(f"llama-{args.params.lower()}-4", args.params, 4)
    servers = []
    for i, tree in enumerate(args.trees):
        env = server_env(OUT, OUT / f"ab{i}.sqlite3")
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=tree, env=env, check=True)
        server = LiveServer(env)
        server.log = open(OUT / f"ab{i}.log", "wb")  # noqa: SIM115
        server.proc = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(server.port), "mactuner_site.asgi:application"],
            cwd=tree, env=env, stdout=server.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(server.port)
        server.wait_warm()
        watcher = SocketWatcher(server)
        watcher.next()
        servers.append((str(tree), server, Api(server), watcher))

    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import transformers

    transformers.utils.logging.disable_progress_bar()

    def plain() -> float:
        started = time.perf_counter()
        transformers.AutoTokenizer.from_pretrained(str(path))
        touch_all(transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="auto", device_map="cpu"))
        return time.perf_counter() - started

    def web(api: Api, watcher: SocketWatcher) -> float:
        started = time.perf_counter()
        status, body = api.call("POST", "/api/load", {"model": path.name, "device": "cpu", "dtype": "auto"})
        assert status == 202, body
        job_id = body["job"]["id"]  # type: ignore[index]
        final = watcher.until(lambda m: job_of(m).get("id") == job_id and not job_of(m)["active"], timeout=60)
        took = time.perf_counter() - started
        assert job_of(final)["state"] == "succeeded", final
        api.call("POST", "/api/unload")
        return took

    try:
        for _ in range(2):  # first-load costs outside the timed runs
            plain()
            for _tree, _server, api, watcher in servers:
                web(api, watcher)
        evict(path)
        warm(path)
        times: dict[str, list[float]] = {tree: [] for tree, *_ in servers} | {"plain": []}
        for i in range(args.runs):
            for tree, _server, api, watcher in servers if i % 2 == 0 else servers[::-1]:
                warm(path)
                time.sleep(0.2)
                times[tree].append(web(api, watcher))
            warm(path)
            time.sleep(0.2)
            times["plain"].append(plain())
    finally:
        for _tree, server, _api, watcher in servers:
            watcher.close()
            server.stop()
    print(f"{path.name}, hot, {args.runs} runs each, interleaved")
    for name, ts in times.items():
        ts.sort()
        print(
            f"  {name:40s} best {ts[0] * 1e3:6.1f}  p25 {ts[len(ts) // 4] * 1e3:6.1f}  median {statistics.median(ts) * 1e3:6.1f} ms"
        )
    for tree, *_ in servers:
        print(f"  {tree}: best/plain {min(times[tree]) / min(times['plain']):.3f}  median/median "
              f"{statistics.median(times[tree]) / statistics.median(times['plain']):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
