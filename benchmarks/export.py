"""Export throughput: ratings.csv streamed by the app vs PostgreSQL's own COPY of the same rows.

Run from the repository root with PostgreSQL on 127.0.0.1 (as for the tests):

    .venv/bin/python benchmarks/export.py --rows 100000 1000000

It builds its own database (``clinic_eval_bench_export``, dropped and recreated), loads one
study per requested size with PostgreSQL COPY, then for each size runs, in a fresh process:
the app's streamed ``ratings.csv`` (the code behind the download) and ``COPY (SELECT ...) TO
STDOUT`` producing the same columns. It prints rows/s and the process's peak RSS, so memory
that stays flat from 10^5 to 10^6 rows shows as equal peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE = "clinic_eval_bench_export"
DIMENSIONS = ("reasoning_clarity", "treatment_feasibility")
RATERS = 60
SEAT_COLUMNS = [
    "id", "public_id", "study_id", "comparison_id", "rater_id", "shown_order",
    "queue_position", "is_repeat", "status", "first_shown_at", "done_at",
]  # fmt: skip
JUDGMENT_COLUMNS = [
    "id", "assignment_id", "study_id", "rater_id", "preference", "preferred_response_id",
    "rationale", "seconds_on_item", "revision", "created_at", "updated_at",
]  # fmt: skip
RATING_COLUMNS = [
    "judgment_id", "position", "response_id", "scores", "hallucination", "severity", "note",
]  # fmt: skip


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic_eval.settings")
    os.environ["DATABASE_URL"] = f"{SERVER}/{DATABASE}"
    os.environ.setdefault("DEBUG", "1")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        connection.execute(f"CREATE DATABASE {DATABASE}")


def copy_rows(cursor: object, table: str, columns: list[str], rows: list[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
        for row in rows:
            copy.write_row(row)


def load_study(rating_rows: int, seed: int) -> int:
    """A study with ``rating_rows`` rows of ratings.csv (two dimensions per rated response)."""
    import random

    from django.db import connection
    from django.utils import timezone

    from clinic_eval.models import Arm, Case, Response, Study, StudyRater, User
    from clinic_eval.studies import services

    rng = random.Random(seed)
    coordinator = User.objects.get_or_create(username="bench-coordinator", role="coordinator")[0]
    study = services.study_create(title=f"bench {rating_rows}", created_by=coordinator)
    raters = [
        User.objects.get_or_create(username=f"bench-dr-{i:03d}", role="physician")[0]
        for i in range(RATERS)
    ]
    StudyRater.objects.bulk_create(StudyRater(study=study, rater=r) for r in raters)
    arms = [Arm.objects.create(study=study, label=label, kind="imported") for label in "XYZ"]
    judgments = rating_rows // (2 * len(DIMENSIONS))
    n_cases = max(1, judgments // (3 * 20))
    cases = Case.objects.bulk_create(
        Case(study=study, external_id=f"C{i:07d}", stratum="General", narrative="x")
        for i in range(n_cases)
    )
    responses = Response.objects.bulk_create(
        Response(case=case, arm=arm, raw_text="Plan.", display_text="Plan.")
        for case in cases
        for arm in arms
    )
    by_case = {}
    for response in responses:
        by_case.setdefault(response.case_id, []).append(response.pk)
    from clinic_eval.models import Comparison

    comparisons = Comparison.objects.bulk_create(
        Comparison(study=study, case=case, arm_set=pair)
        for case in cases
        for pair in ("X | Y", "X | Z", "Y | Z")
    )
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM clinic_eval_assignment")
        next_id = cursor.fetchone()[0] + 1
        seats, verdicts, ratings = [], [], []
        for index in range(judgments):
            comparison = comparisons[index % len(comparisons)]
            rater = raters[(index // len(comparisons)) % RATERS]
            pair = [0, 1] if comparison.arm_set == "X | Y" else [0, 2]
            if comparison.arm_set == "Y | Z":
                pair = [1, 2]
            shown = [by_case[comparison.case_id][p] for p in pair]
            seat_id = next_id + index
            seats.append((seat_id, f"b{seed}-{seat_id}", study.pk, comparison.pk, rater.pk,
                          json.dumps(shown), index, False, "done", now, now))  # fmt: skip
            verdicts.append((seat_id, study.pk, rater.pk, "A", shown[0], "", 60.0, 1, now, now))
            for position in (0, 1):
                scores = {d: rng.randint(1, 5) for d in DIMENSIONS}
                ratings.append(
                    (seat_id, position, shown[position], json.dumps(scores), "none", "", "")
                )
        raw = connection.connection.cursor()
        copy_rows(raw, "clinic_eval_assignment", SEAT_COLUMNS, seats)
        copy_rows(raw, "clinic_eval_judgment", JUDGMENT_COLUMNS, [(v[0], *v) for v in verdicts])
        copy_rows(raw, "clinic_eval_responserating", RATING_COLUMNS, ratings)
        for table in ("clinic_eval_assignment", "clinic_eval_judgment"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)",
                [next_id + judgments],
            )
        cursor.execute("ANALYZE")
    Study.objects.filter(pk=study.pk).update(status="closed")
    return study.pk


COPY_SQL = """
COPY (
  SELECT a.public_id, u.username, c.external_id, arm.label, chr(65 + rr.position),
         d.key, d.value::int, a.is_repeat
  FROM clinic_eval_responserating rr
  JOIN clinic_eval_judgment j ON j.id = rr.judgment_id
  JOIN clinic_eval_assignment a ON a.id = j.assignment_id
  JOIN clinic_eval_user u ON u.id = j.rater_id
  JOIN clinic_eval_comparison cmp ON cmp.id = a.comparison_id
  JOIN clinic_eval_case c ON c.id = cmp.case_id
  JOIN clinic_eval_response r ON r.id = rr.response_id
  JOIN clinic_eval_arm arm ON arm.id = r.arm_id
  CROSS JOIN LATERAL jsonb_each_text(rr.scores) d
  WHERE j.study_id = {study}
  ORDER BY rr.judgment_id, rr.position
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, study_id: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    django_setup()
    from django.db import connection

    from clinic_eval.models import Study
    from clinic_eval.results import exports

    study = Study.objects.get(pk=study_id)
    # Warm up what a running server has already paid for once: the connection, lazy imports.
    connection.ensure_connection()
    edits = exports.FILES_BY_NAME["judgment_edits.csv"]
    list(exports.stream_csv(edits, study, exports.ExportFilters(), exports.RowCounter()))
    with connection.connection.cursor().copy("COPY (SELECT 1) TO STDOUT") as warm:
        list(warm)
    baseline = peak_rss_mib()
    started = time.perf_counter()
    size = 0
    if kind == "app":
        counter = exports.RowCounter()
        file = exports.FILES_BY_NAME["ratings.csv"]
        for chunk in exports.stream_csv(file, study, exports.ExportFilters(), counter):
            size += len(chunk)
        rows = counter.rows
    else:
        raw = connection.connection.cursor()
        with raw.copy(COPY_SQL.format(study=study.pk)) as copy:
            for block in copy:
                size += len(block)
        rows = None
    elapsed = time.perf_counter() - started
    print(json.dumps({"kind": kind, "rows": rows, "bytes": size, "seconds": elapsed,
                      "peak_rss_mib": peak_rss_mib(), "baseline_rss_mib": baseline}))  # fmt: skip


def run_child(kind: str, study_id: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--study", str(study_id)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"{SERVER}/{DATABASE}"},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--measure", choices=["app", "copy"])
    parser.add_argument("--study", type=int)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.study)
        return

    recreate_database()
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("database: PostgreSQL on 127.0.0.1, own database", DATABASE)
    studies = {}
    for index, rows in enumerate(args.rows):
        started = time.perf_counter()
        studies[rows] = load_study(rows, seed=index)
        print(f"loaded {rows:,} rating rows in {time.perf_counter() - started:.1f} s")
    header = (
        f"{'rows':>10} {'what':<26} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} "
        f"{'RSS after imports':>17} {'peak RSS':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    for rows, study_id in studies.items():
        app = run_child("app", study_id)
        copy = run_child("copy", study_id)
        assert app["rows"] == rows, (app["rows"], rows)
        for name, result in (
            ("app ratings.csv (stream)", app),
            ("PostgreSQL COPY TO STDOUT", copy),
        ):
            seconds = result["seconds"]
            print(
                f"{rows:>10,} {name:<26} {seconds:>8.2f} {rows / seconds:>10,.0f} "
                f"{result['bytes'] / seconds / 1e6:>7.1f} {result['baseline_rss_mib']:>13.0f} MiB "
                f"{result['peak_rss_mib']:>5.0f} MiB"
            )
        print(f"{'':>10} app / COPY time: {app['seconds'] / copy['seconds']:.2f}x")


if __name__ == "__main__":
    main()
