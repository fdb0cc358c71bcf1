from django.apps import AppConfig


class LoaderConfig(AppConfig):
    name = "loader"
    verbose_name = "Model loader"
    default_auto_field = "django.db.models.BigAutoField"
