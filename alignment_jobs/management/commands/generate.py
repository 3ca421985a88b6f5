from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alignment_jobs.generation import jobs, selectors, shards
from alignment_jobs.models import GenerationJob
from clinic_eval.errors import DomainError
from clinic_eval.models import Study


class Command(BaseCommand):
    help = (
        "Launch a generation job for a study's model arms. By default its shards go to the "
        "workers (queue gpu); --inline runs them in this process instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", type=int, required=True, help="The study's id")
        parser.add_argument(
            "--arm", action="append", dest="arms", metavar="LABEL", help="Repeat for several"
        )
        parser.add_argument("--case", action="append", dest="cases", metavar="CASE_ID")
        parser.add_argument("--stratum", default="")
        parser.add_argument(
            "--engine", choices=GenerationJob.Engine.values, default=GenerationJob.Engine.AUTO
        )
        parser.add_argument("--shard-size", type=int, default=None)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--inline", action="store_true", help="Run the shards here, now")
        mode.add_argument("--wait", action="store_true", help="Queue, then follow progress")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            study = Study.objects.get(pk=options["study"])
        except Study.DoesNotExist:
            raise CommandError(f"there is no study with id {options['study']}") from None
        arms = None
        if options["arms"]:
            by_label = {arm.label: arm for arm in study.arms.all()}
            unknown = [label for label in options["arms"] if label not in by_label]
            if unknown:
                raise CommandError(f"no such arm(s) in study {study.pk}: {', '.join(unknown)}")
            arms = [by_label[label] for label in options["arms"]]
        try:
            job = jobs.job_launch(
                study=study,
                created_by=None,
                arms=arms,
                case_ids=options["cases"],
                stratum=options["stratum"],
                engine=options["engine"],
                shard_size=options["shard_size"],
                enqueue=not options["inline"],
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Job #{job.pk}: {job.item_count} items in {job.shards.count()} shards")
        if options["inline"]:
            for shard_id in job.shards.values_list("pk", flat=True):
                while shards.shard_run(shard_id=shard_id).retry:
                    pass
        elif options["wait"]:
            self._follow(job)
        else:
            return
        job.refresh_from_db()
        progress = selectors.job_progress(job=job)
        self.stdout.write(
            f"Job #{job.pk} {job.get_status_display().lower()}: {progress.done} done, "
            f"{progress.failed} failed, {progress.completion_tokens} tokens"
        )
        for item in progress.failures[:20]:
            self.stderr.write(f"  {item.case.external_id} / {item.arm.label}: {item.error}")
        if progress.failed:
            raise CommandError(f"{progress.failed} item(s) failed")

    def _follow(self, job: GenerationJob) -> None:
        last = None
        warned = ""
        while True:
            job.refresh_from_db()
            progress = selectors.job_progress(job=job, failures_shown=0)
            line = f"{progress.percent}% ({progress.done}/{progress.total} done)"
            if line != last:
                self.stdout.write(line)
                last = line
            warning = selectors.job_workers(job=job).warning
            if warning and warning != warned:
                self.stderr.write(warning)
            warned = warning
            if job.is_finished:
                return
            time.sleep(1)
