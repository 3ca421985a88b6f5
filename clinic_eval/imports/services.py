from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Literal, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.imports import parsing as importing
from clinic_eval.models import (
    Arm,
    AuditEvent,
    Case,
    DataImport,
    Response,
    Study,
    User,
)
from clinic_eval.studies.services import (
    NewResponse,
    physician_original_responses_sync,
    responses_store,
)

MAX_IMPORT_ATTEMPTS = 3


MAX_STORED_ERRORS = 2_000


def data_import_check_size(*, filename: str, size: int) -> None:
    """Refuse an oversized file before anyone reads it into memory."""
    limit = settings.IMPORT_MAX_BYTES
    if size > limit:
        raise DomainError(
            f"{filename} is {size:,} bytes; the limit is {limit:,} bytes "
            "(IMPORT_MAX_BYTES). Split the file and import the parts."
        )


def data_import_create(
    *,
    study: Study,
    kind: str,
    filename: str,
    content: bytes,
    created_by: User | None,
    file_format: str | None = None,
    arm_label: str = "",
) -> DataImport:
    """Record an uploaded file; refuse at once what cannot be read at all."""
    if kind not in DataImport.Kind.values:
        raise DomainError(f"kind must be one of {', '.join(DataImport.Kind.values)}")
    if arm_label and kind != DataImport.Kind.RESPONSES:
        raise DomainError("an arm applies to a responses file only")
    if arm_label and not study.arms.filter(label=arm_label, kind=Arm.Kind.IMPORTED).exists():
        raise DomainError(
            f"study {study.pk} has no imported-outputs arm labelled {arm_label!r}; "
            "create it first (manage.py create_arm --kind imported)"
        )
    data_import_check_size(filename=filename, size=len(content))
    if not content.strip():
        raise DomainError(f"{filename} is empty")
    file_format = file_format or importing.detect_format(filename)
    if file_format not in DataImport.Format.values:
        raise DomainError(
            f"cannot tell the format of {filename!r}: name it .jsonl or .csv, or choose a format"
        )
    return DataImport.objects.create(
        study=study,
        kind=kind,
        format=file_format,
        filename=filename[:255],
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
        content=content,
        created_by=created_by,
        arm_label=arm_label,
    )


def data_import_submit(
    *,
    study: Study,
    kind: str,
    filename: str,
    content: bytes,
    created_by: User,
    file_format: str | None = None,
) -> DataImport:
    """Record a file and have a worker apply it once the surrounding transaction commits."""
    from clinic_eval.imports.tasks import data_import_run_task

    with transaction.atomic():
        data_import = data_import_create(
            study=study,
            kind=kind,
            filename=filename,
            content=content,
            created_by=created_by,
            file_format=file_format,
        )
        audit_record(
            action=AuditEvent.Action.IMPORT_SUBMITTED,
            actor=created_by,
            study_id=study.pk,
            target=f"import:{data_import.pk}",
            summary=f"{kind} from {filename} ({len(content):,} bytes)",
        )
        transaction.on_commit(lambda: data_import_run_task.delay(data_import.pk))
    return data_import


MAX_CASES_PER_REQUEST = 1_000


def cases_create(*, study: Study, records: list, created_by: User) -> DataImport:
    """Create cases sent in a request with the same checks as a file import, all or nothing.

    Runs at once rather than on a worker, so it is kept to small batches; the request is
    recorded as an import, which also refuses the same batch sent twice.
    """
    if not records:
        raise DomainError("send at least one case")
    if len(records) > MAX_CASES_PER_REQUEST:
        raise DomainError(
            f"send at most {MAX_CASES_PER_REQUEST:,} cases per request; "
            "import larger sets as a file"
        )
    content = "".join(
        json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records
    ).encode()
    data_import = data_import_create(
        study=study,
        kind=DataImport.Kind.CASES,
        filename="api-request.jsonl",
        content=content,
        created_by=created_by,
        file_format=DataImport.Format.JSONL,
    )
    return data_import_run(import_id=data_import.pk)


def data_import_run(*, import_id: int) -> DataImport:
    """Validate and apply an import all-or-nothing. Safe to call twice or concurrently."""
    claimed = DataImport.objects.filter(
        pk=import_id, status__in=[DataImport.Status.PENDING, DataImport.Status.RUNNING]
    ).update(
        status=DataImport.Status.RUNNING,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return DataImport.objects.get(pk=import_id)

    with transaction.atomic():
        data_import = DataImport.objects.select_for_update().get(pk=import_id)
        if data_import.is_finished:  # a concurrent delivery finished it while we waited
            return data_import
        # One import at a time per study, so "already exists" checks stay true until we write.
        study = Study.objects.select_for_update().get(pk=data_import.study_id)
        if data_import.attempts > MAX_IMPORT_ATTEMPTS:
            errors = [
                importing.LineError(
                    None,
                    f"the worker stopped {data_import.attempts - 1} times while importing this "
                    "file; nothing was imported",
                )
            ]
            return _data_import_finish(data_import, errors=errors, row_count=0)
        earlier = (
            DataImport.objects.filter(
                study=study,
                kind=data_import.kind,
                sha256=data_import.sha256,
                status=DataImport.Status.SUCCEEDED,
            )
            .exclude(pk=data_import.pk)
            .first()
        )
        if earlier is not None:
            when = timezone.localtime(earlier.finished_at).strftime("%Y-%m-%d %H:%M")
            errors = [
                importing.LineError(
                    None,
                    f"this file was already imported into this study on {when} "
                    f"(import #{earlier.pk}); nothing was imported again",
                )
            ]
            return _data_import_finish(data_import, errors=errors, row_count=0)
        try:
            with transaction.atomic():
                if data_import.kind == DataImport.Kind.CASES:
                    errors, row_count = _cases_apply(study, data_import)
                else:
                    errors, row_count = _responses_apply(study, data_import)
                if errors:
                    transaction.set_rollback(True)
        except IntegrityError as exc:
            errors, row_count = [importing.LineError(None, f"database refused the rows: {exc}")], 0
        return _data_import_finish(data_import, errors=errors, row_count=row_count)


def _data_import_finish(
    data_import: DataImport, *, errors: list[importing.LineError], row_count: int
) -> DataImport:
    data_import.status = DataImport.Status.FAILED if errors else DataImport.Status.SUCCEEDED
    data_import.errors = [error.as_dict() for error in errors[:MAX_STORED_ERRORS]]
    data_import.error_count = len(errors)
    data_import.row_count = 0 if errors else row_count
    data_import.content = None
    data_import.finished_at = timezone.now()
    data_import.save(
        update_fields=[
            "status",
            "errors",
            "error_count",
            "row_count",
            "content",
            "finished_at",
        ]
    )
    return data_import


def _records(data_import: DataImport) -> Iterator[tuple[int, dict | importing.RecordError]]:
    # An unfinished import still holds its content, and data_import_create let in only the
    # formats and kinds the parser reads.
    assert data_import.content is not None
    return importing.read_records(
        bytes(data_import.content),
        cast(importing.FileFormat, data_import.format),
        kind=cast(Literal["cases", "responses"], data_import.kind),
    )


def _cases_apply(study: Study, data_import: DataImport) -> tuple[list[importing.LineError], int]:
    validated = importing.validate_cases(
        _records(data_import),
        strata=study.strata,
        layers=study.decision_layers,
        existing_ids=set(study.cases.values_list("external_id", flat=True)),
        max_rows=settings.IMPORT_MAX_ROWS,
    )
    if validated.errors:
        return validated.errors, 0
    authors = {
        user.username: user
        for user in User.objects.filter(
            username__in={row.original_author_ref for row in validated.rows}
        )
    }
    Case.objects.bulk_create(
        [
            Case(
                study=study,
                external_id=row.external_id,
                stratum=row.stratum,
                narrative=row.narrative,
                fields=row.fields,
                ground_truth=row.ground_truth,
                original_text=row.original_text,
                original_decision=row.original_decision,
                original_author_ref=row.original_author_ref,
                original_author=authors.get(row.original_author_ref),
                data_import=data_import,
            )
            for row in validated.rows
        ],
        batch_size=1_000,
    )
    physician_original_responses_sync(study=study)
    return [], len(validated.rows)


def _responses_apply(
    study: Study, data_import: DataImport
) -> tuple[list[importing.LineError], int]:
    arms = {arm.label: arm for arm in study.arms.filter(kind=Arm.Kind.IMPORTED)}
    cases = dict(study.cases.values_list("external_id", "id"))
    existing = set(
        Response.objects.filter(arm__in=arms.values()).values_list(
            "case__external_id", "arm__label", "sample_index"
        )
    )
    validated = importing.validate_responses(
        _records(data_import),
        layers=study.decision_layers,
        case_ids=set(cases),
        arm_labels=set(arms),
        existing_keys=existing,
        max_rows=settings.IMPORT_MAX_ROWS,
        arm_label=data_import.arm_label,
    )
    if validated.errors:
        return validated.errors, 0
    provenance = {
        "source": "import",
        "import_id": data_import.pk,
        "filename": data_import.filename,
        "sha256": data_import.sha256,
    }
    for label, arm in arms.items():
        responses_store(
            study=study,
            arm=arm,
            responses=[
                NewResponse(
                    case_id=cases[row.case_id],
                    sample_index=row.sample,
                    raw_text=row.text,
                    decision=row.decision or None,
                    provenance=provenance,
                    data_import_id=data_import.pk,
                )
                for row in validated.rows
                if row.arm == label
            ],
        )
    return [], len(validated.rows)
