"""Where Django looks for the app's models; they live with the jobs layer (``loader.jobs.models``)."""

from loader.jobs.models import LoadJob, ServerProcess

__all__ = ["LoadJob", "ServerProcess"]
