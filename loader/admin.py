"""Where Django's admin autodiscovery looks; the job history's admin lives in ``loader.web.admin``."""

from loader.web import admin  # noqa: F401
