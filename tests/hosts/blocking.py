"""The real model host, except that its check of a folder named ``medium`` waits (without the
GIL, like a read from a dead network share) until the file ``$MACTUNER_TEST_RELEASE`` exists."""

import os
import sys
import time
from typing import Any

from loader.host.main import main
from loader.pipeline import slot

real = slot.preflight


def blocked(request: Any, **kwargs: Any) -> Any:
    if request.path.name == "medium":
        while not os.path.exists(os.environ["MACTUNER_TEST_RELEASE"]):
            time.sleep(0.05)
    return real(request, **kwargs)


slot.preflight = blocked  # type: ignore[assignment]
main(sys.argv[1:])
