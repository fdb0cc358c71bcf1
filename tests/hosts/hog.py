"""The real model host, except that its check of a folder named ``medium`` first runs a
catastrophic regular expression: C code that holds the host's GIL for hours and never looks at a
cancel flag (what a hostile adapter pattern did before the preflight bounded it)."""

import re
import sys
from typing import Any

from loader.host.main import main
from loader.pipeline import slot

real = slot.preflight


def hog(request: Any, **kwargs: Any) -> Any:
    if request.path.name == "medium":
        re.fullmatch("(.*.*.*.*.*.*.*.*.*.*.*.*.*.*)*XYZ", "model.layers.0.self_attn.q_proj")
    return real(request, **kwargs)


slot.preflight = hog  # type: ignore[assignment]
main(sys.argv[1:])
