"""The real model host with a bug in its metadata stage (an exception no stage types)."""

import sys
from typing import Any

from loader.host.main import main
from loader.pipeline import stages


def broken_metadata(*args: Any, **kwargs: Any) -> Any:
    raise ZeroDivisionError("a bug in the metadata stage")


stages.extract_metadata = broken_metadata  # type: ignore[assignment]
main(sys.argv[1:])
