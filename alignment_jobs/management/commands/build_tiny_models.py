from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from alignment_jobs.demo.tiny_models import build_tiny_models


class Command(BaseCommand):
    help = (
        "Build a tiny random Llama checkpoint and LoRA adapters (sft, dpo, grpo) for tests, the "
        "demo and benchmarks. Offline and CPU-only; an existing set with the same parameters is "
        "reused unless --force."
    )
    # Pure file generation: it needs neither the database nor a checked project.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            help="Output directory (default: VAR_DIR/models/tiny).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
        parser.add_argument(
            "--force", action="store_true", help="Rebuild even if an identical set exists."
        )

    def handle(
        self, *args: object, out: Path | None, seed: int, force: bool, **options: object
    ) -> None:
        out_dir = out if out is not None else settings.VAR_DIR / "models" / "tiny"
        try:
            models = build_tiny_models(out_dir, seed=seed, force=force)
        except (ValueError, OSError) as exc:
            raise CommandError(f"Cannot build the tiny models in {out_dir}: {exc}") from exc
        self.stdout.write(f"base    {models.base}")
        for name, path in models.adapters.items():
            self.stdout.write(f"{name:<7} {path}")
