"""Creates the demo checkpoint the first run offers, unless the models folder has models."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from loader.catalog.listing import list_models
from mactuner_dev.synth import parse_count, write_checkpoint


class Command(BaseCommand):
    help = "Write a small generated Llama-style demo model into MACTUNER_MODELS_DIR if it has none."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="demo-llama-60m")
        parser.add_argument("--params", default="60M")
        parser.add_argument("--shards", type=int, default=4)
        parser.add_argument("--force", action="store_true", help="write it even if models exist")

    def handle(self, *args: Any, **opts: Any) -> None:
        root = settings.MACTUNER_MODELS_DIR
        if list_models() and not opts["force"]:
            self.stdout.write(f"models found in {root}; no demo needed")
            return
        path = write_checkpoint(root / opts["name"], parse_count(opts["params"]), opts["shards"])
        self.stdout.write(self.style.SUCCESS(f"demo model written: {path}"))
