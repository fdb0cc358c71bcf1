from django.urls import path

from loader.web.consumers import LoaderConsumer

websocket_urlpatterns = [path("ws/loader/", LoaderConsumer.as_asgi())]
