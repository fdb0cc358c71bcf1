from django.urls import path

from loader.web import fit_views, generate_views, views

urlpatterns = [
    path("", views.page, name="page"),
    path("api/models", views.models, name="api-models"),
    path("api/fit", fit_views.fit, name="api-fit"),
    path("api/status", views.status, name="api-status"),
    path("api/jobs", views.jobs, name="api-jobs"),
    path("api/load", views.load, name="api-load"),
    path("api/cancel", views.cancel, name="api-cancel"),
    path("api/unload", views.unload, name="api-unload"),
    path("api/generate", generate_views.generate, name="api-generate"),
    path("api/generate/cancel", generate_views.generate_cancel, name="api-generate-cancel"),
]
