"""Criterion rubrics: import and export (HealthBench JSONL), physician edits and verification.

A rubric belongs to a case, or to every case of a stratum. Its criteria carry points (negative
for harmful content), an axis and a level. Every change by a person bumps the rubric's version
and writes a ``RubricChange``; a verification counts for the version it saw, so a rubric changed
after someone verified it must be verified again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F

from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    AuditEvent,
    Case,
    CaseRubric,
    RubricChange,
    RubricCriterion,
    RubricVerification,
    Study,
    StudyRater,
    User,
)

AXIS_TAG = "axis:"
LEVEL_TAG = "level:"
MAX_CRITERION_TEXT = 2_000
MAX_POINTS = 100
MAX_CRITERIA_PER_RUBRIC = 60


@dataclass(frozen=True)
class CriterionInput:
    text: str
    points: int
    axis: str = RubricCriterion.Axis.ACCURACY
    level: str = RubricCriterion.Level.EXAMPLE
    tags: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        if not self.text.strip():
            found.append("a criterion needs text")
        elif len(self.text) > MAX_CRITERION_TEXT:
            found.append(f"criterion text is limited to {MAX_CRITERION_TEXT} characters")
        if isinstance(self.points, bool) or not isinstance(self.points, int):
            found.append(f"points must be a whole number; got {self.points!r}")
        elif self.points == 0 or abs(self.points) > MAX_POINTS:
            found.append(f"points must be between -{MAX_POINTS} and {MAX_POINTS}, not 0")
        if not self.axis.strip() or len(self.axis) > 64:
            found.append("each criterion needs an axis (at most 64 characters)")
        if self.level not in RubricCriterion.Level.values:
            found.append(f"level must be example or cluster; got {self.level!r}")
        return found

    @classmethod
    def from_healthbench(cls, item: Any) -> CriterionInput:
        """``{"criterion", "points", "tags"}``, with ``axis:…`` and ``level:…`` tags."""
        if not isinstance(item, dict) or "criterion" not in item or "points" not in item:
            raise DomainError('each rubric item needs "criterion" and "points"')
        tags = item.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise DomainError('"tags" must be a list of strings')
        axis = next((t[len(AXIS_TAG) :] for t in tags if t.startswith(AXIS_TAG)), "accuracy")
        level = next((t[len(LEVEL_TAG) :] for t in tags if t.startswith(LEVEL_TAG)), "example")
        other = [t for t in tags if not t.startswith((AXIS_TAG, LEVEL_TAG))]
        points = item["points"]
        if isinstance(points, float) and points.is_integer():
            points = int(points)
        return cls(text=str(item["criterion"]), points=points, axis=axis, level=level, tags=other)


def criterion_as_healthbench(criterion: RubricCriterion) -> dict[str, Any]:
    tags = [f"{AXIS_TAG}{criterion.axis}", f"{LEVEL_TAG}{criterion.level}", *criterion.tags]
    return {"criterion": criterion.text, "points": criterion.points, "tags": tags}


def criterion_snapshot(criterion: RubricCriterion) -> dict[str, Any]:
    return {
        "text": criterion.text,
        "points": criterion.points,
        "axis": criterion.axis,
        "level": criterion.level,
    }


def _checked(criteria: Sequence[CriterionInput]) -> None:
    if not criteria:
        raise DomainError("a rubric needs at least one criterion")
    if len(criteria) > MAX_CRITERIA_PER_RUBRIC:
        raise DomainError(f"a rubric holds at most {MAX_CRITERIA_PER_RUBRIC} criteria")
    problems = [f"criterion {n}: {p}" for n, c in enumerate(criteria, 1) for p in c.problems()]
    if problems:
        raise DomainError("; ".join(problems[:10]))
    if not any(c.points > 0 for c in criteria):
        raise DomainError("a rubric needs at least one criterion with positive points")


@transaction.atomic
def rubric_store(
    *,
    study: Study,
    criteria: Sequence[CriterionInput],
    source: str,
    case: Case | None = None,
    stratum: str = "",
    drafted_by: Arm | None = None,
    provenance: dict[str, Any] | None = None,
) -> CaseRubric:
    """Create or replace the rubric of a case (or stratum); replacing drops its verifications.

    A rubric whose criteria have been graded cannot be replaced: the grades would lose meaning.
    """
    _checked(criteria)
    if study.is_frozen:
        raise DomainError("the study is open or closed; its rubrics are frozen")
    if (case is None) == (not stratum):
        raise DomainError("a rubric is for one case or for one stratum")
    if case is not None and case.study_id != study.pk:
        raise DomainError("that case belongs to another study")
    if stratum and stratum not in study.strata:
        raise DomainError(f"no stratum {stratum!r} in this study")
    lookup: dict[str, Case | str | None] = (
        {"case": case} if case is not None else {"stratum": stratum, "case": None}
    )
    rubric = CaseRubric.objects.select_for_update().filter(study=study, **lookup).first()
    if rubric is not None:
        if rubric.criteria.filter(grades__isnull=False).exists():
            raise DomainError(f"{rubric} has been graded; its criteria can no longer be replaced")
        rubric.criteria.all().delete()
        rubric.verifications.all().delete()
        rubric.source = source
        rubric.drafted_by = drafted_by
        rubric.draft_provenance = provenance or {}
        rubric.version = F("version") + 1
        rubric.save()
        rubric.refresh_from_db()
    else:
        rubric = CaseRubric.objects.create(
            study=study,
            case=case,
            stratum=stratum if case is None else "",
            source=source,
            drafted_by=drafted_by,
            draft_provenance=provenance or {},
        )
    RubricCriterion.objects.bulk_create(
        [
            RubricCriterion(rubric=rubric, position=n, **asdict(criterion))
            for n, criterion in enumerate(criteria)
        ]
    )
    return rubric


# --- HealthBench JSONL ------------------------------------------------------------------------


@dataclass(frozen=True)
class RubricLine:
    line: int
    case_id: str
    stratum: str
    criteria: list[CriterionInput]


def parse_rubrics_jsonl(text: str) -> list[RubricLine]:
    """One rubric per line: ``{"case_id" | "stratum", "rubrics": [{criterion, points, tags}]}``.

    Every problem is reported with its line number; nothing is returned unless all lines pass.
    """
    parsed, errors = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise DomainError("each line must be a JSON object")
            case_id = str(record.get("case_id") or record.get("prompt_id") or "")
            stratum = str(record.get("stratum") or "")
            if bool(case_id) == bool(stratum):
                raise DomainError('give either "case_id" or "stratum"')
            items = record.get("rubrics")
            if not isinstance(items, list):
                raise DomainError('"rubrics" must be a list of criteria')
            criteria = [CriterionInput.from_healthbench(item) for item in items]
            _checked(criteria)
            parsed.append(RubricLine(number, case_id, stratum, criteria))
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg})")
        except DomainError as exc:
            errors.append(f"line {number}: {exc}")
    keys = [(r.case_id, r.stratum) for r in parsed]
    errors += [
        f"line {r.line}: a second rubric for {r.case_id or r.stratum}"
        for n, r in enumerate(parsed)
        if (r.case_id, r.stratum) in keys[:n]
    ]
    if errors:
        raise DomainError("; ".join(errors[:20]) + (" …" if len(errors) > 20 else ""))
    if not parsed:
        raise DomainError("the file holds no rubric")
    return parsed


@transaction.atomic
def rubrics_import(*, study: Study, text: str, imported_by: User) -> list[CaseRubric]:
    """Import a whole file or nothing."""
    lines = parse_rubrics_jsonl(text)
    cases = {
        case.external_id: case
        for case in study.cases.filter(external_id__in=[line.case_id for line in lines])
    }
    unknown = [
        f"line {line.line}: no case {line.case_id!r}"
        for line in lines
        if line.case_id and line.case_id not in cases
    ]
    if unknown:
        raise DomainError("; ".join(unknown[:20]))

    stored = [
        rubric_store(
            study=study,
            criteria=line.criteria,
            source=CaseRubric.Source.IMPORTED,
            case=cases.get(line.case_id),
            stratum=line.stratum,
        )
        for line in lines
    ]
    audit_record(
        action=AuditEvent.Action.IMPORT_SUBMITTED,
        actor=imported_by,
        study_id=study.pk,
        summary=f"{len(stored)} criteria rubric(s) from JSONL",
    )
    return stored


def rubrics_jsonl(rubrics: Iterable[CaseRubric]) -> Iterator[str]:
    """The HealthBench shape, one rubric per line, with what we know of its verification."""
    for rubric in rubrics:
        record: dict[str, Any] = (
            {"case_id": rubric.case.external_id} if rubric.case else {"stratum": rubric.stratum}
        )
        record["rubrics"] = [criterion_as_healthbench(c) for c in rubric.criteria.all()]
        record["version"] = rubric.version
        record["source"] = rubric.source
        yield json.dumps(record, ensure_ascii=False) + "\n"


# --- Physician edits and verification ---------------------------------------------------------


def _may_edit(rubric: CaseRubric, user: User) -> None:
    study = rubric.study
    if study.is_frozen:
        raise DomainError("the study is open or closed; its rubrics are frozen")
    is_rater = StudyRater.objects.filter(study=study, rater=user).exists()
    is_coordinator = user.is_coordinator and study.coordinators.filter(pk=user.pk).exists()
    if not (is_rater or is_coordinator or user.is_superuser):
        raise DomainError("only the study's physicians and coordinators edit its rubrics")


def _bump(rubric: CaseRubric) -> int:
    CaseRubric.objects.filter(pk=rubric.pk).update(version=F("version") + 1)
    rubric.refresh_from_db(fields=["version"])
    return rubric.version


@transaction.atomic
def criterion_add(*, rubric: CaseRubric, author: User, data: CriterionInput) -> RubricCriterion:
    rubric = CaseRubric.objects.select_for_update().get(pk=rubric.pk)
    _may_edit(rubric, author)
    if data.problems():
        raise DomainError("; ".join(data.problems()))
    if rubric.criteria.count() >= MAX_CRITERIA_PER_RUBRIC:
        raise DomainError(f"a rubric holds at most {MAX_CRITERIA_PER_RUBRIC} criteria")
    last = rubric.criteria.order_by("-position").values_list("position", flat=True).first()
    criterion = RubricCriterion.objects.create(
        rubric=rubric, position=(last or 0) + 1, **asdict(data)
    )
    RubricChange.objects.create(
        rubric=rubric,
        criterion_id_at_change=criterion.pk,
        author=author,
        action=RubricChange.Action.ADD,
        after=criterion_snapshot(criterion),
        version=_bump(rubric),
    )
    return criterion


@transaction.atomic
def criterion_edit(
    *, criterion: RubricCriterion, author: User, data: CriterionInput
) -> RubricCriterion:
    rubric = CaseRubric.objects.select_for_update().get(pk=criterion.rubric_id)
    _may_edit(rubric, author)
    if data.problems():
        raise DomainError("; ".join(data.problems()))
    criterion = RubricCriterion.objects.get(pk=criterion.pk)
    before = criterion_snapshot(criterion)
    criterion.text = data.text.strip()
    criterion.points = data.points
    criterion.axis = data.axis
    criterion.level = data.level
    after = criterion_snapshot(criterion)
    if before == after:
        return criterion
    if not any(
        (data.points if c.pk == criterion.pk else c.points) > 0 for c in rubric.criteria.all()
    ):
        raise DomainError("a rubric needs at least one criterion with positive points")
    criterion.save(update_fields=["text", "points", "axis", "level"])
    RubricChange.objects.create(
        rubric=rubric,
        criterion_id_at_change=criterion.pk,
        author=author,
        action=RubricChange.Action.EDIT,
        before=before,
        after=after,
        version=_bump(rubric),
    )
    return criterion


@transaction.atomic
def criterion_delete(*, criterion: RubricCriterion, author: User) -> None:
    rubric = CaseRubric.objects.select_for_update().get(pk=criterion.rubric_id)
    _may_edit(rubric, author)
    remaining = rubric.criteria.exclude(pk=criterion.pk)
    if not remaining.filter(points__gt=0).exists():
        raise DomainError("a rubric needs at least one criterion with positive points")
    RubricChange.objects.create(
        rubric=rubric,
        criterion_id_at_change=criterion.pk,
        author=author,
        action=RubricChange.Action.DELETE,
        before=criterion_snapshot(criterion),
        version=_bump(rubric),
    )
    criterion.delete()


@transaction.atomic
def rubric_verify(*, rubric: CaseRubric, physician: User, version: int) -> RubricVerification:
    """A physician vouches for the rubric as they saw it (``version``, from their form)."""
    rubric = CaseRubric.objects.select_for_update().get(pk=rubric.pk)
    _may_edit(rubric, physician)
    if not physician.is_physician:
        raise DomainError("rubrics are verified by physicians")
    if version != rubric.version:
        raise DomainError(
            "someone changed this rubric while you were reading it; review it again, then verify"
        )
    verification, created = RubricVerification.objects.get_or_create(
        rubric=rubric, physician=physician, version=rubric.version
    )
    if created:
        RubricChange.objects.create(
            rubric=rubric,
            author=physician,
            action=RubricChange.Action.VERIFY,
            version=rubric.version,
        )
    return verification
