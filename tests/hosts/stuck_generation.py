"""The real model host, except that a generation whose prompt is ``STUCK`` first runs a
catastrophic regular expression: C code that holds the host's GIL and never sees a cancel (a
generation stuck in native code). Everything else is the real host."""

import re
import sys
from typing import Any

from loader.host.main import main
from loader.pipeline import generate as generation

real = generation.generate


def stuck(loaded: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    if request.prompt == "STUCK":
        re.fullmatch("(.*.*.*.*.*.*.*.*.*.*.*.*.*.*)*XYZ", "model.layers.0.self_attn.q_proj" * 4)
    return real(loaded, request, *args, **kwargs)


generation.generate = stuck  # type: ignore[assignment]
main(sys.argv[1:])
