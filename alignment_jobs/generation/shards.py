from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from alignment_jobs import engines, prompts
from alignment_jobs.generation.jobs import job_refresh
from alignment_jobs.generation.spec_engine import (
    case_data,
    prompt_encode,
    prompt_render,
    spec_engine,
    spec_provenance,
    worker_name,
)
from alignment_jobs.models import GenerationItem, GenerationJob, GenerationShard, GenerationSpec
from clinic_eval.models import Response, Study
from clinic_eval.studies.services import NewResponse, responses_store

logger = logging.getLogger(__name__)


MAX_ERROR_CHARS = 2_000


class ShardRunStatus(models.TextChoices):
    """What a call of ``shard_run`` left the shard as (``missing``: it no longer exists)."""

    PENDING = GenerationShard.Status.PENDING.value, GenerationShard.Status.PENDING.label
    RUNNING = GenerationShard.Status.RUNNING.value, GenerationShard.Status.RUNNING.label
    DONE = GenerationShard.Status.DONE.value, GenerationShard.Status.DONE.label
    CANCELLED = GenerationShard.Status.CANCELLED.value, GenerationShard.Status.CANCELLED.label
    MISSING = "missing", "No such shard"


@dataclass
class ShardOutcome:
    status: ShardRunStatus
    done: int = 0
    failed: int = 0
    retry: bool = False
    errors: list[str] = field(default_factory=list)


def _claim(shard_id: int) -> str | None:
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    token = uuid.uuid4().hex
    claimed = (
        GenerationShard.objects.filter(pk=shard_id)
        .filter(
            Q(status=GenerationShard.Status.PENDING)
            | Q(status=GenerationShard.Status.RUNNING, heartbeat_at__lt=stale_before)
        )
        .update(
            status=GenerationShard.Status.RUNNING,
            claim_token=token,
            attempts=F("attempts") + 1,
            heartbeat_at=now,
            started_at=now,
            worker=worker_name(),
        )
    )
    return token if claimed else None


@contextmanager
def _heartbeat(shard_id: int, token: str) -> Iterator[None]:
    """Touch the shard while the engine works: the sweep tells live workers from dead ones."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.GENERATION_HEARTBEAT_SECONDS):
                GenerationShard.objects.filter(pk=shard_id, claim_token=token).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-shard-{shard_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _adapter_rank_for_base(job: GenerationJob, spec: GenerationSpec) -> int:
    """The largest LoRA rank among this job's arms on the same base, so one engine serves all."""
    rank = 0
    for other in GenerationSpec.objects.filter(
        shards__job=job, base_model_path=spec.base_model_path, dtype=spec.dtype
    ).exclude(adapter_path=""):
        try:
            rank = max(rank, engines.check_adapter(other.adapter_path)[1])
        except engines.EngineError:
            continue
    return rank


def _failed(item: GenerationItem, error: str, *, final: bool) -> None:
    item.attempts += 1
    item.error = error[:MAX_ERROR_CHARS]
    if final or item.attempts >= settings.GENERATION_MAX_ATTEMPTS:
        item.status = GenerationItem.Status.FAILED
        item.finished_at = timezone.now()


def shard_run(*, shard_id: int) -> ShardOutcome:
    """Generate one shard's pending items. Safe to call twice, concurrently, or after a crash."""
    token = _claim(shard_id)
    if token is None:
        status = GenerationShard.objects.filter(pk=shard_id).values_list("status", flat=True)
        return ShardOutcome(status=ShardRunStatus(next(iter(status), ShardRunStatus.MISSING)))
    shard = GenerationShard.objects.select_related("job", "spec__arm__study").get(pk=shard_id)
    job, spec = shard.job, shard.spec
    GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.QUEUED).update(
        status=GenerationJob.Status.RUNNING, started_at=timezone.now()
    )
    items = list(shard.items.filter(status=GenerationItem.Status.PENDING).select_related("case"))
    if job.cancel_requested_at is not None:
        return _shard_finish(shard, token, items, cancelled=True)
    if shard.attempts > settings.GENERATION_MAX_ATTEMPTS:
        for item in items:
            _failed(
                item,
                f"the worker stopped {shard.attempts - 1} times while generating this shard "
                "(killed, or out of memory?)",
                final=True,
            )
        return _shard_finish(shard, token, items)

    with _heartbeat(shard.pk, token):
        generated = _generate(job, spec, items)
    shard.engine_seconds += generated.engine_seconds
    return _shard_finish(shard, token, items, new_responses=generated.responses)


@dataclass
class _Generated:
    responses: list[NewResponse] = field(default_factory=list)
    engine_seconds: float = 0.0


def _existing_samples(spec: GenerationSpec, items: Sequence[GenerationItem]) -> dict[int, int]:
    return dict(
        Response.objects.filter(arm=spec.arm, case__in=[item.case_id for item in items])
        .values("case_id")
        .annotate(n=Count("id"))
        .values_list("case_id", "n")
    )


def _generate(
    job: GenerationJob, spec: GenerationSpec, items: Sequence[GenerationItem]
) -> _Generated:
    result = _Generated()
    existing = _existing_samples(spec, items)
    todo = []
    for item in items:
        if existing.get(item.case_id, 0) >= spec.n_samples:
            # Another job (or an earlier delivery of this shard) already stored them.
            item.status = GenerationItem.Status.DONE
            item.finished_at = timezone.now()
        else:
            todo.append(item)
    if not todo:
        return result

    def load_engine() -> engines.Engine:
        return spec_engine(
            spec, engine_name=job.engine, adapter_rank=_adapter_rank_for_base(job, spec)
        )

    try:
        engine = load_engine()
    except engines.EngineError as exc:
        for item in todo:
            _failed(item, str(exc), final=False)
        return result

    study = spec.arm.study
    pool = []
    if spec.few_shot_k:
        pool = [
            case_data(case)
            for case in study.cases.filter(external_id__in=spec.few_shot_pool).order_by(
                "external_id"
            )
        ]
    ready: list[tuple[GenerationItem, engines.EngineRequest, dict[str, Any]]] = []
    for item in todo:
        try:
            request, provenance = _request_for(engine, spec, case_data(item.case), pool)
        except prompts.TemplateError as exc:
            _failed(item, f"prompt: {exc}", final=True)
            continue
        except ValueError as exc:  # the prompt does not fit the model's context
            _failed(item, str(exc), final=True)
            continue
        ready.append((item, request, provenance))
    if not ready:
        return result

    sampling = engines.Sampling(
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_tokens=spec.max_tokens,
        n=spec.n_samples,
    )
    started = time.perf_counter()
    try:
        outputs: list[list[engines.Completion] | Exception] = list(
            engine.generate(
                [request for _, request, _ in ready], sampling, adapter_path=spec.adapter_path
            )
        )
    except Exception as batch_error:
        logger.warning("shard batch failed (%s); retrying its items one by one", batch_error)
        outputs = []
        engine_raised = True
        for _, request, _ in ready:
            try:
                if engine_raised:  # it may still hold the failed requests: start afresh
                    engines.engine_discard(engine)
                    engine = load_engine()
                outputs.append(
                    engine.generate([request], sampling, adapter_path=spec.adapter_path)[0]
                )
                engine_raised = False
            except Exception as item_error:
                outputs.append(item_error)
                engine_raised = True
    elapsed = time.perf_counter() - started
    result.engine_seconds = elapsed

    base_provenance = _spec_provenance(spec, engine, job)
    for (item, request, provenance), output in zip(ready, outputs, strict=True):
        if isinstance(output, Exception):
            _failed(item, f"{type(output).__name__}: {output}", final=False)
            continue
        item.completion_tokens = sum(choice.completion_tokens for choice in output)
        item.status = GenerationItem.Status.DONE
        item.finished_at = timezone.now()
        for sample_index, choice in enumerate(output):
            result.responses.append(
                NewResponse(
                    case_id=item.case_id,
                    sample_index=sample_index,
                    raw_text=choice.text,
                    provenance={
                        **base_provenance,
                        **provenance,
                        "seed": request.seed,
                        "prompt_tokens": len(request.token_ids),
                        "completion_tokens": choice.completion_tokens,
                        "finish_reason": choice.finish_reason,
                        "shard_id": item.shard_id,
                        "batch_size": len(ready),
                        "batch_seconds": round(elapsed, 4),
                        "latency_seconds": round(elapsed / len(ready), 4),
                    },
                )
            )
    return result


def _request_for(
    engine: engines.Engine,
    spec: GenerationSpec,
    case: prompts.CaseData,
    pool: Sequence[prompts.CaseData],
) -> tuple[engines.EngineRequest, dict[str, Any]]:
    examples = prompts.few_shot_examples(case, pool, k=spec.few_shot_k, seed=spec.seed)
    layers = spec.arm.study.decision_layers
    rendered = prompts.build_messages(
        case,
        system_prompt=spec.system_prompt,
        user_template=spec.user_template,
        layers=layers,
        examples=examples,
    )
    text = prompt_render(engine, spec, rendered.messages)
    token_ids = prompt_encode(engine, text, max_tokens=spec.max_tokens)
    seed = prompts.request_seed(spec.seed, case.external_id)
    return engines.EngineRequest(token_ids=token_ids, seed=seed), {
        "prompt_sha256": prompts.sha256_text(text),
        "few_shot_case_ids": rendered.few_shot_ids,
    }


def _spec_provenance(
    spec: GenerationSpec, engine: engines.Engine, job: GenerationJob
) -> dict[str, Any]:
    return {
        "source": "generation",
        "job_id": job.pk,
        **spec_provenance(spec, engine),
        "template_version": spec.template_version,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "sampling": {
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "max_tokens": spec.max_tokens,
            "n": spec.n_samples,
            "spec_seed": spec.seed,
        },
    }


def _spec_leak_terms(study: Study) -> list[str]:
    """Checkpoint and adapter folder names: a response must not echo them either."""
    terms: set[str] = set()
    for base, adapter in GenerationSpec.objects.filter(arm__study=study).values_list(
        "base_model_path", "adapter_path"
    ):
        terms.update(Path(path).name for path in (base, adapter) if path)
    return sorted(terms)


def _shard_finish(
    shard: GenerationShard,
    token: str,
    items: Sequence[GenerationItem],
    *,
    new_responses: Sequence[NewResponse] = (),
    cancelled: bool = False,
) -> ShardOutcome:
    study = shard.spec.arm.study
    with transaction.atomic():
        current = GenerationShard.objects.select_for_update().get(pk=shard.pk)
        if new_responses:
            responses_store(
                study=study,
                arm=shard.spec.arm,
                responses=new_responses,
                leak_terms=_spec_leak_terms(study),
            )
        for item in items:
            if cancelled:
                item.status = GenerationItem.Status.CANCELLED
        # Only items still pending change: a concurrent delivery may have finished some.
        still_open = set(
            GenerationItem.objects.select_for_update()
            .filter(pk__in=[item.pk for item in items], status=GenerationItem.Status.PENDING)
            .values_list("pk", flat=True)
        )
        GenerationItem.objects.bulk_update(
            [item for item in items if item.pk in still_open],
            ["status", "attempts", "error", "completion_tokens", "finished_at"],
        )
        still_pending = current.items.filter(status=GenerationItem.Status.PENDING).exists()
        outcome = ShardOutcome(
            status=ShardRunStatus(current.status),
            done=sum(item.status == GenerationItem.Status.DONE for item in items),
            failed=sum(item.status == GenerationItem.Status.FAILED for item in items),
            errors=[item.error for item in items if item.error],
        )
        if current.claim_token == token:
            if cancelled:
                current.status = GenerationShard.Status.CANCELLED
            elif still_pending:
                current.status = GenerationShard.Status.PENDING
                outcome.retry = True
            else:
                current.status = GenerationShard.Status.DONE
            current.finished_at = timezone.now()
            current.engine_seconds = shard.engine_seconds
            current.last_error = next((e for e in reversed(outcome.errors)), "")[:MAX_ERROR_CHARS]
            current.save(update_fields=["status", "finished_at", "engine_seconds", "last_error"])
            outcome.status = ShardRunStatus(current.status)
        job_refresh(job_id=shard.job_id)
    return outcome
