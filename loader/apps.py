from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LoaderConfig(AppConfig):
    name = "loader"
    verbose_name = _("모델 로더")  # the page's own name, English from the catalog
    default_auto_field = "django.db.models.BigAutoField"
