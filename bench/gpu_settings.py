"""Settings for the GPU machine's test run: the image has no daphne/Twisted, and the pipeline
tests need Django only for pytest-django's ``settings`` fixture (``--ds=bench.gpu_settings``)."""

from mactuner_site.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "daphne"]  # noqa: F405
