"""Time and peak memory of the full study report on simulated studies of growing size.

    .venv/bin/python benchmarks/stats.py [--sizes 10000,1000000] [--n-boot 1000]

Each size runs in a fresh process, so the peak resident memory printed is that report's own.
The study has 4 arms, 40 raters, ratings on 2 Likert dimensions for both responses of every
judgment, a hallucination flag per rated response and an automatic-accuracy layer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = {"SFT": 0.5, "DPO": 0.2, "GRPO": 0.0, "Physician": -0.2}
ACCURACY = {"SFT": 0.78, "DPO": 0.74, "GRPO": 0.9, "Physician": 0.7}


def run_one(size: int, n_boot: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from clinic_eval.statistics.report import ReportOptions, build_report, report_json
    from clinic_eval.statistics.simulate import LAYERS, simulate_study

    tables = simulate_study(
        judgments=size, strengths=STRENGTHS, accuracy=ACCURACY, raters=40, seed=1
    )
    options = ReportOptions(layers=LAYERS, n_boot=n_boot, primary=("preference", "SFT", "GRPO"))
    started = time.perf_counter()
    report = build_report(tables, options)
    elapsed = time.perf_counter() - started
    return {
        "judgments": size,
        "ratings": len(tables.ratings),
        "flags": len(tables.flags),
        "seconds": round(elapsed, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "report_bytes": len(report_json(report)),
        "primary_p": report["primary"]["p_value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n_boot)))
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    print(f"machine: {os.cpu_count()} CPUs; bootstrap replicates requested: {args.n_boot}")
    print(f"{'judgments':>10} {'ratings':>10} {'flags':>9} {'seconds':>8} {'peak MiB':>9}")
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
            f"{row['seconds']:>8.2f} {row['peak_rss_mib']:>9.1f}"
        )
    print("seconds: build_report only (simulation excluded); peak MiB: the whole process.")


if __name__ == "__main__":
    main()
