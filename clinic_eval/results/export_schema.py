"""The export files' typed columns, and the exact encoding of each value as a CSV cell.

Pure (no ORM), so ``clinic_eval.reporting`` can read an export back without the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clinic_eval.web.csvsafe import csv_safe, csv_unescape


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | int | float | bool | json | time
    description: str


def encode(kind: str, value: Any) -> Any:
    """A Python value as a CSV cell (RFC 4180 quoting is the csv module's)."""
    if value is None:
        return ""
    if kind == "text":
        return csv_safe(str(value))
    if kind == "json":
        return csv_safe(
            json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        )
    if kind == "bool":
        return "true" if value else "false"
    if kind == "time":
        return value.isoformat()
    if kind == "float":
        return repr(float(value))
    return value


def decode(kind: str, cell: str) -> Any:
    """The inverse of ``encode``: exactly the value that was written."""
    if kind == "text":
        return csv_unescape(cell)
    if cell == "":
        return None
    if kind == "json":
        return json.loads(csv_unescape(cell))
    if kind == "int":
        return int(cell)
    if kind == "float":
        return float(cell)
    if kind == "bool":
        return cell == "true"
    if kind == "time":
        return datetime.fromisoformat(cell)
    raise ValueError(f"unknown column kind {kind!r}")


@dataclass(frozen=True)
class FileSchema:
    name: str
    description: str
    columns: tuple[Column, ...]

    @property
    def header(self) -> list[str]:
        return [column.name for column in self.columns]


ITEM = Column("item_id", "text", "Opaque id of the rated item (the seat), as raters saw it.")
RATER = Column("rater", "text", "Username of the physician.")
CASE = Column("case_id", "text", "The case's external id.")
STRATUM = Column("stratum", "text", "The case's stratum.")
REPEAT = Column("is_repeat", "bool", "A second showing for intra-rater consistency.")
POSITION = Column("position", "text", "Where the response was shown: A, B, ...")
ARM = Column("arm", "text", "The arm that wrote the response (unblinded).")

SCHEMAS: tuple[FileSchema, ...] = (
    FileSchema(
        "judgments.csv",
        "One row per rater x item: what was shown where, and what the rater chose.",
        (
            ITEM, RATER, CASE, STRATUM,
            Column("mode", "text", "pairwise or best_of_n."),
            Column("arm_set", "text", "The arms compared, sorted, joined by ' | '."),
            Column("shown_arms", "text", "The arms in on-screen order (A, B, ...), ' | '."),
            Column("preference", "text", "As chosen: a position letter, 'tie' or 'none'."),
            Column("preferred_arm", "text", "The arm of the chosen response; empty for tie/none."),
            Column("arm_a", "text", "Pairwise: the first arm of the sorted pair."),
            Column("arm_b", "text", "Pairwise: the second arm of the sorted pair."),
            Column("outcome", "text", "Pairwise: a, b, tie or both_bad, relative to arm_a/arm_b."),
            Column("left_arm", "text", "Pairwise: the arm shown as A."),
            Column("right_arm", "text", "Pairwise: the arm shown as B."),
            REPEAT,
            Column("rationale", "text", "The rater's free-text reason."),
            Column("seconds_on_item", "float", "From first showing to submission, capped."),
            Column("revision", "int", "1 when first stored; +1 per audited edit."),
            Column("created_at", "time", "When first stored (ISO 8601, UTC)."),
            Column("updated_at", "time", "When last changed."),
        ),
    ),
    FileSchema(
        "ratings.csv",
        "One row per rater x response x Likert dimension.",
        (
            ITEM, RATER, CASE, ARM, POSITION,
            Column("dimension", "text", "The rubric dimension key."),
            Column("score", "int", "The Likert score."),
            REPEAT,
        ),
    ),
    FileSchema(
        "hallucinations.csv",
        "One row per rater x response: the hallucination flag.",
        (
            ITEM, RATER, CASE, ARM, POSITION,
            Column("kind", "text", "none, or the kind of hallucination (factual, reasoning...)."),
            Column("severity", "text", "The severity when a hallucination was flagged."),
            Column("note", "text", "The rater's note on the response."),
            REPEAT,
        ),
    ),
    FileSchema(
        "spans.csv",
        "One row per marked span: rater x response x span, a range of the text the rater saw "
        "or, for an omission, what the response left out.",
        (
            ITEM, RATER, CASE, STRATUM, ARM, POSITION,
            Column("sample_index", "int", "Which sample of the arm was shown."),
            Column("start", "int", "Where the range starts in the response's display_text "
                   "(a 0-based character offset); empty for an omission."),
            Column("end", "int", "Where it ends (exclusive); empty for an omission."),
            Column("quote", "text", "The marked text, display_text[start:end]."),
            Column("category", "text", "The span category's key (the rubric's categories)."),
            Column("harm", "text", "none, minor, moderate or severe."),
            Column("case_field", "text", "For an omission: the case field left out."),
            Column("note", "text", "The rater's note on the span."),
            REPEAT,
        ),
    ),
    FileSchema(
        "responses.csv",
        "Every response with its parsed decision, review state and provenance.",
        (
            CASE,
            Column("arm", "text", "The arm's label."),
            Column("arm_kind", "text", "model, physician_original or imported."),
            Column("sample_index", "int", "Sample number (0 is the one shown to raters)."),
            Column("review", "text", "clear, held, approved or excluded."),
            Column("display_length", "int", "Characters of the text raters saw."),
            Column("display_text", "text", "The text raters saw (blinding-normalised)."),
            Column("parsed_decision", "json", "The structured decision parsed from the text."),
            Column("parse_problems", "json", "What the parser could not read."),
            Column("leak_flags", "json", "Why the leak check held it, if it did."),
            Column("provenance", "json", "Engine, checkpoint, prompt hash, sampling, timing."),
            Column("raw_text", "text", "The text as generated or imported."),
        ),
    ),
    FileSchema(
        "cases.csv",
        "Every case with its ground truth and the physician's original decision.",
        (
            CASE, STRATUM,
            Column("narrative", "text", "The de-identified case summary."),
            Column("fields", "json", "Structured findings."),
            Column("ground_truth", "json", "Ground truth per decision layer."),
            Column("original_decision", "json", "The treating physician's decision."),
            Column("original_author", "text", "Who made the original decision."),
        ),
    ),
    FileSchema(
        "assignments.csv",
        "The frozen design: one row per seat, rated or not.",
        (
            ITEM, RATER, CASE, STRATUM,
            Column("arm_set", "text", "The arms compared, sorted."),
            Column("shown_arms", "text", "The arms in on-screen order."),
            Column("queue_position", "int", "Place in the rater's queue."),
            REPEAT,
            Column("status", "text", "pending or done."),
            Column("first_shown_at", "time", "When first served to the rater."),
            Column("done_at", "time", "When rated."),
        ),
    ),
    FileSchema(
        "unblinding_key.csv",
        "Which arm was behind each position of each item.",
        (
            ITEM, POSITION, CASE, ARM,
            Column("sample_index", "int", "Which sample of the arm was shown."),
        ),
    ),
    FileSchema(
        "judgment_edits.csv",
        "The audit trail of every edit to a stored judgment.",
        (
            ITEM,
            Column("editor", "text", "Who edited."),
            Column("edited_at", "time", "When."),
            Column("reason", "text", "The reason given."),
            Column("before", "json", "The judgment before the edit."),
            Column("after", "json", "The judgment after the edit."),
        ),
    ),
    FileSchema(
        "adjudications.csv",
        "One row per item sent to adjudication: why, to whom, and the final judgment (the "
        "raters' own judgments stay as they were in judgments.csv).",
        (
            Column("adjudication_id", "text", "Opaque id of the adjudication."),
            CASE, STRATUM,
            Column("arm_set", "text", "The item's arms, sorted, ' | ' (as in judgments.csv)."),
            Column("shown_arms", "text", "The arms in the adjudicator's on-screen order."),
            Column("triggers", "text", "The conditions of the plan's rule that fired, ' | '."),
            Column("adjudicator", "text", "Username of the adjudicator; empty while unassigned."),
            Column("status", "text", "pending or done."),
            Column("created_at", "time", "When the item was sent to adjudication."),
            Column("done_at", "time", "When the adjudicator recorded the final judgment."),
            Column("preference", "text", "As chosen: a position letter of shown_arms, 'tie' or "
                   "'none'; empty while pending."),
            Column("preferred_arm", "text", "The arm of the chosen response; empty for tie/none."),
            Column("ratings", "json", "The final ratings by arm: {arm: {scores: {dimension: "
                   "score}, hallucination, severity, note}}."),
            Column("reason", "text", "The adjudicator's reason."),
        ),
    ),
    FileSchema(
        "rubric_criteria.csv",
        "Every criterion that applies to each case: its own rubric's, else its stratum's.",
        (
            CASE, STRATUM,
            Column("criterion_id", "int", "The criterion's id (as in the grade files)."),
            Column("rubric_scope", "text", "case, or stratum when shared by a stratum."),
            Column("rubric_version", "int", "The rubric's version (+1 per edit)."),
            Column("rubric_source", "text", "imported, drafted or written."),
            Column("verified", "bool", "Verified by the required number of physicians."),
            Column("points", "int", "Points; negative for an undesirable behaviour."),
            Column("axis", "text", "accuracy, completeness, communication_quality, ..."),
            Column("level", "text", "example (this case) or cluster (shared)."),
            Column("criterion", "text", "The criterion as graders read it."),
            Column("tags", "json", "Other tags, as imported."),
        ),
    ),
    FileSchema(
        "rubric_grades.csv",
        "One row per physician x response x criterion: met or not (negative criteria: whether "
        "the undesirable behaviour occurred).",
        (
            ITEM, RATER, CASE, STRATUM, ARM, POSITION,
            Column("sample_index", "int", "Which sample of the arm was shown."),
            Column("criterion_id", "int", "The criterion (rubric_criteria.csv)."),
            Column("met", "bool", "The physician's verdict."),
            Column("note", "text", "The physician's note on this criterion."),
            REPEAT,
        ),
    ),
    FileSchema(
        "grader_verdicts.csv",
        "One row per grader model x response x criterion, with how the verdict was obtained.",
        (
            Column("grader", "text", "The grader arm's label."),
            CASE, STRATUM, ARM,
            Column("sample_index", "int", "Which sample of the arm was graded."),
            Column("criterion_id", "int", "The criterion (rubric_criteria.csv)."),
            Column("met", "bool", "The verdict; empty when no attempt gave a parseable one."),
            Column("attempts", "int", "Generations tried."),
            Column("error", "text", "Why the last attempt failed, if it did."),
            Column("provenance", "json", "Model, prompt hash, sampling, method."),
            Column("raw_output", "text", "What the grader produced."),
        ),
    ),
    FileSchema(
        "audit_trail.csv",
        "Append-only log of the study's events (design, jobs, edits, exports) and of its "
        "coordinators' and raters' sign-ins.",
        (
            Column("at", "time", "When."),
            Column("actor", "text", "Who (as typed, for a failed sign-in)."),
            Column("action", "text", "What kind of event."),
            Column("target", "text", "The object acted on, as kind:id."),
            Column("summary", "text", "What happened, in words."),
            Column("before", "json", "Changed values before."),
            Column("after", "json", "Changed values after."),
            Column("ip_address", "text", "The client's address."),
            Column("via", "text", "web, api, command or worker."),
        ),
    ),
)  # fmt: skip
FILE_COLUMNS = {schema.name: schema.columns for schema in SCHEMAS}
