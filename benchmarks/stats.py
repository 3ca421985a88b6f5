"""Time and peak memory of the full study report on simulated studies of growing size.

    .venv/bin/python benchmarks/stats.py [--sizes 10000,100000,1000000] [--n-boot 1000]

Each size runs in a fresh process, so the peak resident memory printed is that run's own
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, simulated tables included;
the RSS just before ``build_report`` is printed beside it). The study has 4 arms, 40 raters,
ratings on 2 Likert dimensions for both responses of every judgment, a hallucination flag per
rated response and an automatic-accuracy layer.

Beside it, one Bradley-Terry fit on the same battles two ways: ours (``bradley_terry``: Davidson
ties, collapsed to counts per arm pair) and FastChat's ``compute_mle_elo`` method (a logistic
regression on one design-matrix row per battle with +log(10) / -log(10) in the two models'
columns, every battle duplicated so that a tie is one win each way and a win two wins; ties and
"both bad" both count as ties there, as in FastChat), fitted here with scipy's L-BFGS-B in place
of scikit-learn. Printed: both fit times, their ratio and the correlation of the two strength
vectors.

OPENBLAS_NUM_THREADS defaults to 1 as in the test suite: the report's BLAS calls are on tiny
matrices, where BLAS threads only add overhead; ``build_report`` itself spreads its sections over
two threads on large studies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = {"SFT": 0.5, "DPO": 0.2, "GRPO": 0.0, "Physician": -0.2}
ACCURACY = {"SFT": 0.78, "DPO": 0.74, "GRPO": 0.9, "Physician": 0.7}


def fastchat_mle(judgments: pd.DataFrame, base: float = 10.0) -> dict[str, float]:
    """FastChat's compute_mle_elo (battle-level logistic regression), natural-log strengths."""
    names = pd.concat([judgments["arm_a"], judgments["arm_b"]]).unique()
    models = pd.Series(np.arange(len(names)), index=names)
    battles = pd.concat([judgments, judgments], ignore_index=True)
    n, p = len(battles), len(models)
    design = np.zeros((n, p))
    design[np.arange(n), models[battles["arm_a"]].to_numpy()] = +math.log(base)
    design[np.arange(n), models[battles["arm_b"]].to_numpy()] = -math.log(base)
    # An "a" win is two wins for a (both copies); a tie is a win for a in the first copy only.
    y = (battles["outcome"] == "a").to_numpy(float)
    tie = battles["outcome"].isin(["tie", "both_bad"]).to_numpy().copy()
    tie[n // 2 :] = False
    y[tie] = 1.0

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ beta
        value = float(np.sum(np.logaddexp(0.0, z) - y * z))
        gradient = design.T @ (1.0 / (1.0 + np.exp(-z)) - y)
        return value, gradient

    # LogisticRegression(fit_intercept=False, penalty=None, tol=1e-8) with lbfgs, as FastChat.
    result = optimize.minimize(
        loss, np.zeros(p), jac=True, method="L-BFGS-B", options={"gtol": 1e-8, "maxiter": 1000}
    )
    beta = result.x * math.log(base)
    return {str(name): float(beta[k] - beta.mean()) for name, k in models.items()}


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(size: int, n_boot: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from clinic_eval.statistics.bradley_terry import bradley_terry
    from clinic_eval.statistics.report import ReportOptions, build_report, report_json
    from clinic_eval.statistics.simulate import LAYERS, simulate_study

    tables = simulate_study(
        judgments=size, strengths=STRENGTHS, accuracy=ACCURACY, raters=40, seed=1
    )
    options = ReportOptions(layers=LAYERS, n_boot=n_boot, primary=("preference", "SFT", "GRPO"))
    before = rss_mib()
    started = time.perf_counter()
    report = build_report(tables, options)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # The clustered analyses alone (serially), to show what they add to the per-judgment ones.
    from clinic_eval.statistics import crossed, two_way_bootstrap

    started = time.perf_counter()
    coded = crossed.code_judgments(tables.judgments)
    crossed.preference_pairs(coded)
    crossed.win_rates(coded)
    arms = sorted(tables.ratings["arm"].unique())
    crossed.likert_pairs(tables.ratings, arms, sorted(tables.ratings["dimension"].unique()))
    crossed.hallucination(tables.flags, arms)
    two_way_bootstrap.bradley_terry_two_way(
        coded,
        bradley_terry(tables.judgments),
        n_boot=report["preference"]["bradley_terry"]["bootstrap"]["replicates"],
    )
    clustered_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ours = bradley_terry(tables.judgments)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = fastchat_mle(tables.judgments)
    theirs_seconds = time.perf_counter() - started
    ours_vector = [ours.strength(arm) for arm in ours.arms]
    theirs_vector = [theirs[arm] for arm in ours.arms]
    return {
        "judgments": size,
        "ratings": len(tables.ratings),
        "flags": len(tables.flags),
        "seconds": round(elapsed, 3),
        "clustered_seconds": round(clustered_seconds, 3),
        "replicates": report["preference"]["bradley_terry"]["bootstrap"]["replicates"],
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "report_bytes": len(report_json(report)),
        "primary_p": report["primary"]["p_value"],
        "bt_seconds": ours_seconds,
        "fastchat_seconds": theirs_seconds,
        "correlation": float(np.corrcoef(ours_vector, theirs_vector)[0, 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n_boot)))
        return
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "1")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {os.cpu_count()} CPUs ({usable} usable), {platform.machine()}, "
        f"Python {platform.python_version()}; OPENBLAS_NUM_THREADS={threads}; "
        f"bootstrap replicates requested: {args.n_boot}"
    )
    print(
        f"{'judgments':>10} {'ratings':>10} {'flags':>9} {'report s':>9} {'clust s':>8} "
        f"{'BT reps':>7} {'peak MiB':>9} "
        f"{'pre MiB':>8} {'BT s':>7} {'FastChat s':>10} {'ratio':>6} {'corr':>9}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        output = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--n-boot", str(args.n_boot)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=ROOT,
        ).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(
            f"{row['judgments']:>10,} {row['ratings']:>10,} {row['flags']:>9,} "
            f"{row['seconds']:>9.2f} {row['clustered_seconds']:>8.2f} {row['replicates']:>7} "
            f"{row['peak_rss_mib']:>9.1f} {row['rss_before_mib']:>8.1f} "
            f"{row['bt_seconds']:>7.3f} {row['fastchat_seconds']:>10.3f} "
            f"{row['bt_seconds'] / row['fastchat_seconds']:>6.3f} {row['correlation']:>9.6f}"
        )
    print(
        "report s: build_report wall time (simulation excluded), clustered and per-judgment "
        "analyses together; clust s: the clustered analyses alone, one thread; BT reps: two-way "
        "bootstrap replicates; peak MiB: ru_maxrss of the whole "
        "process; pre MiB: its RSS just before build_report.\nBT s: one bradley_terry fit; "
        "FastChat s: one compute_mle_elo-style fit on the same battles; ratio = BT s / FastChat s; "
        "corr: Pearson correlation of the two centred strength vectors."
    )


if __name__ == "__main__":
    main()
