from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.demo.supervisor import Supervised


class Command(BaseCommand):
    help = (
        "Migrate, seed the demo study, then serve the app with an embedded Celery worker. "
        "DEBUG only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--cases", type=int, default=240)

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("run_demo is for a local demo and runs only with DEBUG=1")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("seed_demo", cases=options["cases"])
        call_command("seed_demo_generation")
        call_command("seed_demo_rubrics")
        # The demo has one worker: if it dies it is restarted at once, and a shard it held is
        # handed on within seconds (a production worker waits GENERATION_STALE_SECONDS, 120).
        env = {
            "GENERATION_HEARTBEAT_SECONDS": "2",
            "GENERATION_STALE_SECONDS": "10",
            "GENERATION_SWEEP_SECONDS": "3",
            **os.environ,
        }
        worker = Supervised(
            [
                sys.executable,
                "-m",
                "celery",
                "--app=clinic_eval",
                "--quiet",
                "worker",
                "--pool=solo",
                f"--queues=celery,{settings.CELERY_GPU_QUEUE}",
                "--beat",
                f"--schedule={settings.VAR_DIR / 'celerybeat-schedule'}",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            name="worker",
            say=lambda line: self.stdout.write(self.style.WARNING(line)),
        ).start()
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"\nclinic-eval demo: open {url} (Ctrl-C stops)\n"))
        try:
            call_command("runserver", f"{options['host']}:{options['port']}", use_reloader=False)
        finally:
            worker.stop()
