"""ASGI entry: HTTP through Django, websockets through Channels behind the Origin check."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mactuner_site.settings")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from loader.web.routing import websocket_urlpatterns  # noqa: E402
from loader.web.startup import ServerStartup, schedule_on_daphne  # noqa: E402

schedule_on_daphne()

application = ServerStartup(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
