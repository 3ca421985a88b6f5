"""Time one planner run: 500 simulated studies of 100 cases at each step, as on the design page.

    .venv/bin/python benchmarks/power.py [--simulations 500] [--cases 100]

Prints the wall time of ``power.plan`` (power at the design, the curve over five case counts and
the bisection for the minimum detectable effect: about 14 batches of simulated studies) for a
preference and a Likert endpoint, with the numbers it found.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from clinic_eval.statistics import power


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=500)
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}; {args.simulations} studies of {args.cases} cases per batch"
    )
    for kind, effect in (("preference", 0.62), ("likert", 0.3)):
        inputs = power.PlannerInputs(
            kind=kind,  # type: ignore[arg-type]
            effect=effect,
            cases=args.cases,
            raters=10,
            raters_per_item=2,
            rater_taste=0.3,
            case_effect=0.5,
            pairs_per_case=3,
            simulations=args.simulations,
            seed=1,
        )
        batches: list[int] = []
        started = time.perf_counter()
        result = power.plan(inputs, progress=lambda done, _total, seen=batches: seen.append(done))
        elapsed = time.perf_counter() - started
        print(
            f"{kind:>10}: {elapsed:5.1f} s for {len(batches) - 1} batches; power "
            f"{100 * result.power:.1f}% ± {100 * 1.96 * result.mc_error:.1f}, minimum "
            f"detectable effect {result.minimum_detectable_effect}, "
            f"{result.physician_hours:.1f} physician-hours at 90 s per item"
        )


if __name__ == "__main__":
    main()
