from django.urls import path

from .consumers import LoaderConsumer

websocket_urlpatterns = [path("ws/loader/", LoaderConsumer.as_asgi())]
