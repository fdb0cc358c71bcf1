#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mactuner_site.settings")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from loader.management import launch

    launch.start(sys.argv)  # loadmodel: the host and a first line before Django's setup
    from django.core.management import execute_from_command_line

    if not launch.wants_host(sys.argv):
        execute_from_command_line(sys.argv)
        return
    # loadmodel: its host is stopped and its output written; skip the interpreter's teardown (a
    # Ctrl-C there would end the process by the signal, after its default handler is restored).
    try:
        execute_from_command_line(sys.argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            sys.stderr.write(f"{exit_.code}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
