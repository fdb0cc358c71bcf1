"""``loadmodel NAME --try "prompt"``: the loaded model answers in the terminal, then its speed.

The same generation as ``POST /api/generate`` (greedy, in this command's model host), streamed as
tokens arrive. The answer is the model's text: its newlines are kept, every other control
character is shown escaped (a model can emit ESC sequences as well as a folder name can). The
first token is timed from the Enter key (this process's start) and from the job's creation; the
latter is kept on the job, as the web keeps it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

from loader.host.generation import run_generation
from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob
from loader.pipeline.i18n import printable


def terminal_text(text: str) -> str:
    return "\n".join(printable(line.replace("\t", "    ")) for line in text.split("\n"))


def process_started_at() -> float:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:
        return time.time()


def try_model(
    job: LoadJob, prompt: str, *, max_new_tokens: int, chat: bool, cancel: threading.Event, out: TextIO,
    grace_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Generate, streaming the answer to ``out``; returns the result for ``--json``."""
    shown = [""]

    def on_update(message: dict[str, Any]) -> None:
        text = terminal_text(str(message.get("text", "")))
        if text.startswith(shown[0]):
            out.write(text[len(shown[0]) :])
        else:  # a re-decode changed earlier characters (byte-level BPE): start the line again
            out.write("\n" + text)
        out.flush()
        shown[0] = text

    outcome = run_generation(
        MODEL_HOST, job.pk, {"prompt": prompt, "max_new_tokens": max_new_tokens, "chat": chat},
        on_update=on_update, should_cancel=cancel.is_set, grace_s=grace_s,
    )  # fmt: skip
    on_update(outcome.result | {"text": outcome.result.get("text", shown[0])})
    out.write("\n")
    result = dict(outcome.result, state=outcome.state, error=outcome.error)
    first = result.get("first_token_at")
    if isinstance(first, int | float):
        result["after_enter_s"] = round(first - process_started_at(), 4)
        result["after_load_s"] = round(first - job.created_at.timestamp(), 4)
        LoadJob.objects.filter(pk=job.pk, first_token_s__isnull=True).update(first_token_s=result["after_load_s"])
    return result
