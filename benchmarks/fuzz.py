"""The full API fuzzing run: tests/web/test_fuzz.py with many more cases per operation.

Run from the repository root with PostgreSQL and Redis on 127.0.0.1 (as for the tests):

    .venv/bin/python benchmarks/fuzz.py --examples 200 [--seed 7]

It runs pytest on tests/web/test_fuzz.py against its own database (``clinic_eval_fz``; pytest-django
creates ``test_clinic_eval_fz`` afresh) with ``FUZZ_EXAMPLES`` raised, then prints the operations
covered, the cases run per role with their status codes, and every failure with the first few
reproductions (a curl command each). Without ``--seed`` the cases are the derandomized ones CI
runs, only more of them; a seed explores different ones. Exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/clinic_eval_fz"
SHOWN_FAILURES = 5


def run_pytest(examples: int, seed: int | None, workdir: Path) -> tuple[Path, Path, float]:
    stats = workdir / "stats.jsonl"
    junit = workdir / "junit.xml"
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        "FUZZ_EXAMPLES": str(examples),
        "FUZZ_STATS_FILE": str(stats),
    }
    if seed is not None:
        env["FUZZ_SEED"] = str(seed)
    command = [
        sys.executable, "-m", "pytest", "tests/web/test_fuzz.py", "-q", "-p", "no:cacheprovider",
        "--create-db", f"--junitxml={junit}", "-o", "junit_logging=no",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    return stats, junit, time.perf_counter() - started


def reproduction(text: str) -> str:
    """The failure kinds and the curl line schemathesis prints, without the traceback."""
    kinds = re.findall(r"^\s*\|?\s*- (ST\d+ .+)$", text, re.MULTILINE)
    physician = re.findall(r"AssertionError: (a physician got .+?)(?:\n|$)", text)
    curls = re.findall(r"^\s*\|?\s*(curl .+)$", text, re.MULTILINE)
    lines = sorted(set(kinds)) + physician[:1]
    if curls:
        lines.append(curls[0][:400])
    return "\n      ".join(lines) or text.strip().splitlines()[-1][:400]


def summarise(stats: Path, junit: Path, elapsed: float, examples: int) -> int:
    per_role: dict[str, Counter[int]] = defaultdict(Counter)
    operations: dict[str, set[str]] = defaultdict(set)
    reached_2xx: dict[str, set[str]] = defaultdict(set)
    for line in stats.read_text().splitlines() if stats.exists() else []:
        row = json.loads(line)
        operations[row["role"]].add(row["operation"])
        for code, count in row["statuses"].items():
            per_role[row["role"]][int(code)] += count
            if 200 <= int(code) < 300:
                reached_2xx[row["role"]].add(row["operation"])

    failures = []
    tests = 0
    if junit.exists():
        for testcase in ElementTree.parse(junit).iter("testcase"):
            tests += 1
            for problem in (*testcase.iter("failure"), *testcase.iter("error")):
                failures.append((testcase.get("name", "?"), problem.text or problem.get("message")))

    print(f"\nAPI fuzzing: {examples} examples per operation and role, {elapsed:.0f} s")
    every = set().union(*operations.values()) if operations else set()
    print(f"operations covered: {len(every)}")
    for role in sorted(per_role):
        total = sum(per_role[role].values())
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(per_role[role].items()))
        print(
            f"  {role}: {total} cases over {len(operations[role])} operations "
            f"({len(reached_2xx[role])} reached a 2xx); status codes {codes}"
        )
    print(f"cases run: {sum(sum(c.values()) for c in per_role.values())} in {tests} tests")
    print(f"failures: {len(failures)}")
    for name, text in failures[:SHOWN_FAILURES]:
        print(f"  - {name}\n      {reproduction(text or '')}")
    if len(failures) > SHOWN_FAILURES:
        print(f"  ... and {len(failures) - SHOWN_FAILURES} more (pytest's output above has all)")
    return 1 if failures or not every else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="cases per operation and role")
    parser.add_argument("--seed", type=int, default=None, help="explore other cases than CI's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir:
        stats, junit, elapsed = run_pytest(args.examples, args.seed, Path(workdir))
        return summarise(stats, junit, elapsed, args.examples)


if __name__ == "__main__":
    sys.exit(main())
