"""Reads only regular files inside the model's folder, with a size cap, and never hangs on one.

Folders come from strangers: a ``config.json`` that is a FIFO blocks ``read()`` forever, a
symlink to ``/dev/zero`` never ends, and an index entry ``../../etc/passwd`` names a file that
is not the model's. Every file is therefore resolved (symlinks followed), required to lie inside
the model's folder (for an HF-cache snapshot: inside its ``models--org--name`` folder, whose
``blobs/`` the snapshot links into), opened non-blocking without following a last-moment
symlink, and checked with ``fstat`` on the open descriptor, so what is checked is what is read.
Nothing here echoes file bytes into an error: details name the file and the rule, not content.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from loader.pipeline.errors import FileTooLarge, UnsafeFile
from loader.pipeline.i18n import gettext_noop

MB = 1024 * 1024
CONFIG_CAP = 16 * MB  # config.json, the shard index: real ones are KBs
TOKENIZER_CAP = 64 * MB  # tokenizer.json of a 256k vocabulary is ~35 MB
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_O_FLAGS |= getattr(os, "O_NOFOLLOW", 0)  # the path is already resolved: a symlink now is a swap

# Files transformers may open from a model folder besides the shards (tokenizers, processors,
# generation and chat templates). Anything else ending in these suffixes is checked too.
READ_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".safetensors")


class JsonUnreadable(ValueError):
    """A file that is not JSON; the message is safe to show (no file bytes)."""


def folder_root(path: Path) -> Path:
    """The folder a model's files may resolve into: the folder itself, or its HF-cache repo."""
    absolute = Path(os.path.abspath(path))
    snapshots = absolute.parent
    if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
        return snapshots.parent.resolve()
    return absolute.resolve()


def resolve_inside(file: Path, root: Path) -> Path:
    real = Path(os.path.realpath(file))
    if real != root and root not in real.parents:
        raise UnsafeFile(
            gettext_noop("모델 폴더 밖을 가리키는 파일은 읽지 않습니다: {name}", name=file.name),
            f"{file.name}: resolves outside the model folder",
        )
    return real


@contextmanager
def open_regular(file: Path, root: Path, cap: int | None = None) -> Iterator[tuple[IO[bytes], int]]:
    """Open ``file`` for reading if it is a regular file inside ``root``; yields (file, size).

    Raises ``UnsafeFile``/``FileTooLarge`` for the policy, ``OSError`` for missing/permission.
    """
    real = resolve_inside(file, root)
    fd = os.open(real, _O_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "device" if stat.S_ISCHR(st.st_mode) else "special"
            raise UnsafeFile(
                gettext_noop("일반 파일이 아니어서 읽지 않습니다({kind}): {name}", kind=kind, name=file.name),
                f"{file.name}: not a regular file (mode {stat.filemode(st.st_mode)})",
            )
        if cap is not None and st.st_size > cap:
            raise FileTooLarge(
                gettext_noop(
                    "파일이 너무 큽니다: {name} ({value:.0f} MB, 최대 {value2} MB)",
                    name=file.name,
                    value=st.st_size / MB,
                    value2=cap // MB,
                ),
                f"{file.name}: {st.st_size} bytes > cap {cap}",
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st.st_size


def read_bytes(file: Path, root: Path, cap: int) -> bytes:
    with open_regular(file, root, cap) as (fh, _size):
        data = fh.read(cap + 1)
    if len(data) > cap:  # grew since fstat
        raise FileTooLarge(
            gettext_noop("파일이 너무 큽니다: {name}", name=file.name), f"{file.name}: more than {cap} bytes"
        )
    return data


def _non_finite(name: str) -> Any:
    """NaN and Infinity are not JSON: Python's parser takes them, every strict client (a browser's
    ``JSON.parse``, PostgreSQL's jsonb) refuses them, so one such value would break every page."""
    raise JsonUnreadable(f"a non-finite number ({name}) is not JSON")


def parse_json(data: bytes) -> Any:
    """``json.loads`` with every failure as ``JsonUnreadable`` (deep nesting included)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonUnreadable(f"not UTF-8 text (at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_non_finite)
    except JsonUnreadable:
        raise
    except RecursionError:
        raise JsonUnreadable("JSON nested too deeply") from None
    except ValueError as exc:
        where = f"{getattr(exc, 'msg', 'invalid')} at char {getattr(exc, 'pos', '?')}"
        raise JsonUnreadable(f"not JSON ({type(exc).__name__}: {where})") from None


def read_json(file: Path, root: Path, cap: int = CONFIG_CAP) -> Any:
    return parse_json(read_bytes(file, root, cap))


def check_file(file: Path, root: Path, cap: int | None = None) -> int:
    """Refuse ``file`` unless it is a regular file inside ``root`` (under ``cap``); returns its size."""
    with open_regular(file, root, cap) as (_fh, size):
        return size


def check_folder_files(path: Path, root: Path) -> None:
    """Check every file transformers may open from ``path`` before anything reads it.

    A dangling link inside the folder is left for the stage that needs it to report; a link out
    of the folder, a FIFO, a device or an oversized JSON/tokenizer file is refused here.
    """
    folders = [path, path / "additional_chat_templates"]
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(READ_SUFFIXES):
                continue
            if entry.is_dir(follow_symlinks=False):
                continue
            cap = None if name.endswith(".safetensors") else TOKENIZER_CAP
            if name in ("config.json", "model.safetensors.index.json"):
                cap = CONFIG_CAP
            try:
                check_file(folder / name, root, cap)
            except (FileNotFoundError, PermissionError):
                continue  # reported by the reader that needs it, with its own message
