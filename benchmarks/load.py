"""Load: simulated physicians rating through the JSON API against gunicorn + PostgreSQL.

Run from the repository root with PostgreSQL and Redis on 127.0.0.1 (as for the tests):

    .venv/bin/python benchmarks/load.py --users 50 --duration 60

It builds its own database (``clinic_eval_load``, dropped and recreated), migrates it, seeds an
open pairwise study with one physician and API token per user (``manage.py seed_load_study``),
vacuums and analyzes it (as autovacuum soon would, so that it does not in mid-run), starts
gunicorn on a free local port with production settings (DEBUG off), and runs locust headless
(benchmarks/locustfile.py) twice with the same number of users and no think time:

1. the trivial view: ``GET /healthz``, a plain Django view running ``SELECT 1``;
2. the rating loop: ``POST next`` -> ``GET item`` -> ``PUT judgment``, each item once.

It prints requests/s and p50/p95/p99 latency per endpoint, errors, judgments/s and the
ratio of the rating loop's requests/s to the trivial view's; then checks in the database that
every judgment a client saw accepted is stored exactly once. It exits 1 on any error or
mismatch. Client and server share the machine's cores, so figures are for comparing runs on
one machine, not capacity planning.

Workers: on this 2-core machine (shared with locust and PostgreSQL), 50 users, 30 s runs, two
rounds each after issue 16's changes, the rating loop / trivial view ratio was 0.24 and 0.20
with gthread 2 workers x 8 threads, 0.30 and 0.31 with 4 x 4, 0.23 and 0.31 with 4 x 8, 0.24
and 0.29 with 3 x 8, 0.26 and 0.24 with 2 x 16, all without errors. The rating loop waits on
PostgreSQL for part of each request and a process runs one thread of Python at a time, so
more processes serve it better; the trivial view, which barely waits, served fewer requests
with them. The trivial view swings by a quarter between runs (830 to 1,220 req/s above), so
compare configurations over several runs. The default is the best measured, 4 x 4.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/clinic_eval_load"
BROKER_URL = "redis://127.0.0.1:6379/11"
ENDPOINTS = ("next", "item", "judgment")
TRIVIAL = "healthz"
# Judgments/s the whole server is assumed never to exceed, for sizing the queues: each rater
# gets this share of the run's items, with a margin, so no queue runs dry mid-run. Locust does
# not serve its users evenly: in one 30 s run at 92 judgments/s they rated 30 to 114 items
# each (mean 55), so the margin is three times the mean share.
ASSUMED_MAX_JUDGMENTS_PER_S = 150
UNEVEN_USERS_MARGIN = 3
MIN_ITEMS_PER_RATER = 30
WARM_UP_SECONDS = 3


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    window_s: float  # first request to last response


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


# --- Database -------------------------------------------------------------------------------


def split_database_url(url: str) -> tuple[str, str]:
    """(URL of the server's ``postgres`` maintenance database, the database name)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in {"postgres", "postgresql"} or not name:
        raise SystemExit(f"--database-url must be postgres://.../<name>; got {url!r}")
    if "load" not in name:
        # This database is dropped: refuse anything that could be someone's real one.
        raise SystemExit(f"refusing to drop {name!r}: the benchmark's database name must say load")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def vacuum_analyze(database_url: str) -> None:
    """What autovacuum does to a freshly filled study within a minute or so (its insert
    threshold), done before the runs instead of during one: planner statistics, and the
    visibility map that lets the queue counts read the index alone."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def verify_exactly_once(database_url: str, study_pk: int, accepted: list[str]) -> list[Check]:
    """Every judgment the clients saw accepted is stored once, and nothing else is stored."""
    import psycopg

    distinct = set(accepted)
    with psycopg.connect(database_url) as connection:

        def one(sql: str, *params: object) -> Any:
            return connection.execute(sql, params).fetchone()[0]

        stored = one("SELECT count(*) FROM clinic_eval_judgment WHERE study_id = %s", study_pk)
        per_item = dict(
            connection.execute(
                "SELECT a.public_id, count(j.id) FROM clinic_eval_assignment a "
                "LEFT JOIN clinic_eval_judgment j ON j.assignment_id = a.id "
                "WHERE a.study_id = %s AND a.public_id = ANY(%s) GROUP BY a.public_id",
                (study_pk, list(distinct)),
            ).fetchall()
        )
        judged_twice = one(
            "SELECT count(*) FROM (SELECT assignment_id FROM clinic_eval_judgment "
            "WHERE study_id = %s GROUP BY assignment_id HAVING count(*) > 1) AS twice",
            study_pk,
        )
        done_seats = one(
            "SELECT count(*) FROM clinic_eval_assignment WHERE study_id = %s AND status = 'done'",
            study_pk,
        )
        edits = one(
            "SELECT count(*) FROM clinic_eval_judgmentedit e "
            "JOIN clinic_eval_judgment j ON j.id = e.judgment_id WHERE j.study_id = %s",
            study_pk,
        )
        incomplete = one(
            "SELECT count(*) FROM clinic_eval_judgment j JOIN clinic_eval_assignment a "
            "ON a.id = j.assignment_id WHERE j.study_id = %s AND (SELECT count(*) FROM "
            "clinic_eval_responserating r WHERE r.judgment_id = j.id) "
            "<> jsonb_array_length(a.shown_order)",
            study_pk,
        )
    missing = [item for item in distinct if per_item.get(item, 0) != 1]
    return [
        Check(
            "each accepted item was accepted once",
            len(accepted) == len(distinct),
            f"{len(accepted)} accepted, {len(distinct)} distinct",
        ),
        Check(
            "judgments stored == distinct accepted items",
            stored == len(distinct),
            f"{stored} stored, {len(distinct)} accepted",
        ),
        Check(
            "each accepted item has exactly one judgment",
            not missing,
            f"{len(missing)} without exactly one" + (f", e.g. {missing[:3]}" if missing else ""),
        ),
        Check("no assignment judged twice", judged_twice == 0, f"{judged_twice} judged twice"),
        Check("seats marked done == judgments", done_seats == stored, f"{done_seats} done"),
        Check("no judgment edits (identical resubmits are no-ops)", edits == 0, f"{edits} edits"),
        Check(
            "every judgment rates every shown response",
            incomplete == 0,
            f"{incomplete} incomplete",
        ),
    ]


# --- Processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(database_url: str) -> dict[str, str]:
    """Production settings, as a deployment would set them, on plain HTTP to localhost."""
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "clinic_eval.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": os.environ.get("LOAD_BROKER_URL", BROKER_URL),
        "LOG_LEVEL": "WARNING",
    }


def migrate_and_seed(env: dict[str, str], *seed_args: str) -> str:
    """``manage.py migrate`` then ``manage.py seed_load_study``, in one process: starting
    Django costs seconds here (its views import pandas and scipy)."""
    script = (
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); "
        f"call_command('seed_load_study', *{list(seed_args)!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"migrate or seed_load_study failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def warm_up(host: str, token: str, seconds: float, concurrency: int) -> None:
    """Concurrent requests for a few seconds, so every worker has imported the URL conf and
    views (done on its first request) before anything is measured. Reads only."""
    urls = [
        (f"{host}/healthz", {}),
        (f"{host}/api/rate/studies/", {"Authorization": f"Token {token}"}),
    ]

    def loop(offset: int) -> None:
        deadline = time.monotonic() + seconds
        turn = offset
        while time.monotonic() < deadline:
            url, headers = urls[turn % len(urls)]
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30):
                turn += 1

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(loop, range(concurrency)))


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, log_path: Path
) -> subprocess.Popen:
    worker_class = "gthread" if threads > 1 else "sync"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "clinic_eval.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        f"--worker-class={worker_class}",
        "--backlog=2048",
        "--timeout=60",
        "--log-level=warning",
    ]
    log = log_path.open("w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited at start:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    else:
        stop_gunicorn(server)
        raise SystemExit(f"gunicorn did not answer {url} within 60 s")
    return server


def stop_gunicorn(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # graceful: workers finish their requests
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_locust(
    user_class: str, *, host: str, users: int, seconds: int, out: Path, env: dict[str, str]
) -> tuple[dict[str, EndpointStats], list[str]]:
    """Run one phase; its stats per endpoint (and "overall") and its failure messages."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        user_class,
        "--headless",
        "--only-summary",
        f"--users={users}",
        f"--spawn-rate={users}",
        f"--run-time={seconds}s",
        # A loop in flight when time is up finishes, so a judgment the server stored is never
        # missing from the client's list of accepted items.
        "--stop-timeout=30",
        f"--host={host}",
        # Not --csv: its files are rewritten once a second, so they miss the last second.
        f"--json-file={out}",
        "--loglevel=WARNING",
    ]
    errors_file = out.with_suffix(".errors.json")
    env = env | {"LOAD_ERRORS_FILE": str(errors_file)}
    # locust exits 1 when any request failed; the stats say which, so carry on.
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    out.with_suffix(".log").write_text(result.stdout + result.stderr)
    stats_file = out.with_name(out.name + ".json")
    if not stats_file.exists():
        raise SystemExit(f"locust produced no stats:\n{result.stdout}\n{result.stderr}")
    entries = json.loads(stats_file.read_text())
    failures = []
    if errors_file.exists():
        failures = [
            f"{error['occurrences']} x {error['method']} {error['name']}: {error['error']}"
            for error in json.loads(errors_file.read_text())
        ]
    stats = {entry["name"]: endpoint_stats(entry["name"], [entry]) for entry in entries}
    if entries:
        stats["overall"] = endpoint_stats("overall", entries)
    return stats, failures


def endpoint_stats(name: str, entries: list[dict[str, Any]]) -> EndpointStats:
    """Requests/s and latency percentiles over locust entries, merged as locust merges them."""
    times: Counter[int] = Counter()
    for entry in entries:
        times.update({int(ms): count for ms, count in entry["response_times"].items()})
    requests = sum(entry["num_requests"] for entry in entries)
    first = min(entry["start_time"] for entry in entries)
    last = max(entry["last_request_timestamp"] or first for entry in entries)

    def percentile(share: float) -> float:
        # The same rule as locust's own report: the smallest time that share of requests beat.
        below = 0
        for ms in sorted(times, reverse=True):
            below += times[ms]
            if requests - below <= int(requests * share):
                return float(ms)
        return 0.0

    return EndpointStats(
        name=name,
        requests=requests,
        failures=sum(entry["num_failures"] for entry in entries),
        requests_per_s=requests / max(last - first, 1e-9),
        p50_ms=percentile(0.50),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
        max_ms=float(max(entry["max_response_time"] for entry in entries)),
        window_s=last - first,
    )


# --- Report ---------------------------------------------------------------------------------


def print_table(title: str, rows: list[EndpointStats]) -> None:
    print(f"\n{title}")
    print(f"  {'endpoint':<10} {'requests':>9} {'errors':>7} {'req/s':>8} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}")  # fmt: skip
    for row in rows:
        print(
            f"  {row.name:<10} {row.requests:>9} {row.failures:>7} {row.requests_per_s:>8.1f} "
            f"{row.p50_ms:>7.0f} {row.p95_ms:>7.0f} {row.p99_ms:>7.0f} {row.max_ms:>7.0f}"
        )


def items_per_rater(users: int, duration: int) -> int:
    share = ASSUMED_MAX_JUDGMENTS_PER_S * duration / users
    return max(MIN_ITEMS_PER_RATER, round(UNEVEN_USERS_MARGIN * share))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60, help="seconds of the rating loop")
    parser.add_argument("--trivial-duration", type=int, default=20, help="seconds of /healthz")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per worker; 1 means sync workers"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--items-per-rater",
        type=int,
        default=None,
        help="queue length per physician; default: more than the server could rate in time",
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.users < 1 or args.duration < 1 or args.trivial_duration < 1:
        parser.error("--users, --duration and --trivial-duration must be at least 1")

    server_url, database = split_database_url(args.database_url)
    env = server_env(args.database_url)
    per_rater = args.items_per_rater or items_per_rater(args.users, args.duration)
    work = Path(tempfile.mkdtemp(prefix="clinic-eval-load-"))
    tokens_file, accepted_file = work / "tokens.json", work / "accepted.txt"
    server = None
    started = time.perf_counter()
    try:
        recreate_database(server_url, database)
        print(
            migrate_and_seed(
                env,
                f"--raters={args.users}",
                f"--items-per-rater={per_rater}",
                f"--tokens-file={tokens_file}",
            )
        )
        seeded = json.loads(tokens_file.read_text())
        vacuum_analyze(args.database_url)
        port = free_port()
        host = f"http://127.0.0.1:{port}"
        server = start_gunicorn(env, port, args.workers, args.threads, work / "gunicorn.log")
        warm_up(
            host,
            next(iter(seeded["tokens"].values())),
            seconds=WARM_UP_SECONDS,
            concurrency=args.workers * args.threads,
        )
        kind = f"gthread, {args.threads} threads" if args.threads > 1 else "sync"
        print(
            f"gunicorn: {args.workers} workers ({kind}) on {host}; {os.cpu_count()} CPU cores "
            f"shared with locust and PostgreSQL; setup took {time.perf_counter() - started:.0f} s"
        )

        locust_env = os.environ | {
            "LOAD_TOKENS_FILE": str(tokens_file),
            "LOAD_ACCEPTED_FILE": str(accepted_file),
        }
        phases = (
            (
                "TrivialUser",
                "trivial",
                f"{args.users} users on the trivial view",
                args.trivial_duration,
            ),
            ("PhysicianUser", "rating", f"{args.users} physicians rating", args.duration),
        )
        results = []
        for number, (user_class, name, what, seconds) in enumerate(phases, 1):
            print(f"Phase {number}: {what}, {seconds} s ...")
            results.append(
                run_locust(
                    user_class,
                    host=host,
                    users=args.users,
                    seconds=seconds,
                    out=work / name,
                    env=locust_env,
                )
            )
        (trivial, trivial_failures), (rating, rating_failures) = results
        stop_gunicorn(server)
        server_log = (work / "gunicorn.log").read_text()

        trivial_row = trivial.get(TRIVIAL)
        rating_rows = [rating[name] for name in ENDPOINTS if name in rating]
        overall = rating.get("overall")
        if trivial_row is None or overall is None or not rating_rows:
            raise SystemExit(f"locust recorded no requests; see {work}")
        print_table("Trivial view: GET /healthz (Django view running SELECT 1)", [trivial_row])
        print_table("Rating loop: POST next -> GET item -> PUT judgment", [*rating_rows, overall])

        accepted = accepted_file.read_text().split() if accepted_file.exists() else []
        judgments_per_s = len(accepted) / overall.window_s
        ratio = overall.requests_per_s / trivial_row.requests_per_s
        errors = trivial_row.failures + overall.failures
        print(f"\nJudgments accepted: {len(accepted)} ({judgments_per_s:.1f}/s)")
        print(
            f"Throughput ratio, rating loop / trivial view: {overall.requests_per_s:.1f} / "
            f"{trivial_row.requests_per_s:.1f} req/s = {ratio:.2f}"
        )
        print(f"Errors: {errors}")
        for line in trivial_failures + rating_failures:
            print(f"  {line}")
        if "Traceback" in server_log or "[CRITICAL]" in server_log:
            print(f"gunicorn logged errors:\n{server_log[-3000:]}")

        checks = verify_exactly_once(args.database_url, seeded["study_pk"], accepted)
        print("\nExactly-once check in the database:")
        for check in checks:
            print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        verified = all(check.passed for check in checks)

        if args.json_out:
            report = {
                "users": args.users,
                "duration_s": args.duration,
                "trivial_duration_s": args.trivial_duration,
                "workers": args.workers,
                "threads": args.threads,
                "cpu_count": os.cpu_count(),
                "items_per_rater": per_rater,
                "trivial_view": "/healthz",
                "trivial": asdict(trivial_row),
                "rating": {row.name: asdict(row) for row in [*rating_rows, overall]},
                "judgments_accepted": len(accepted),
                "judgments_per_s": judgments_per_s,
                "throughput_ratio": ratio,
                "errors": errors,
                "verification": {
                    "passed": verified,
                    "checks": [asdict(check) for check in checks],
                },
            }
            args.json_out.write_text(json.dumps(report, indent=2))
        ok = errors == 0 and verified
        print(f"\n{'PASS' if ok else 'FAIL'} in {time.perf_counter() - started:.0f} s")
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"Logs and locust stats: {work}")
        return 0 if ok else 1
    finally:
        if server is not None:
            stop_gunicorn(server)
        if not args.keep:
            drop_database(server_url, database)


if __name__ == "__main__":
    sys.exit(main())
