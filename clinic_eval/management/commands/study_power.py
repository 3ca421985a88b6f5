from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval.design.power import services
from clinic_eval.design.power.views import power_form
from clinic_eval.models import Study, User


class Command(BaseCommand):
    help = (
        "Power and sample size for a study's pre-registered primary endpoint, by simulation "
        "through the primary analysis (the design page's planner, in the terminal). Defaults "
        "come from the study's design; the result is stored and frozen into the plan when the "
        "study opens."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", type=int, required=True)
        parser.add_argument("--effect", type=float, help="win rate (preference) or points")
        parser.add_argument("--cases", type=int)
        parser.add_argument("--raters", type=int, help="physicians")
        parser.add_argument("--raters-per-item", type=int)
        parser.add_argument("--items-per-rater", type=int)
        parser.add_argument("--rater-taste", type=float, help="physician taste SD per arm")
        parser.add_argument("--case-effect", type=float, help="case effect SD per arm")
        parser.add_argument(
            "--from-study", type=int, help="estimate the heterogeneity from this closed study"
        )
        parser.add_argument("--simulations", type=int, default=500)
        parser.add_argument("--coordinator", help="whose closed studies and timings to use")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        study = Study.objects.filter(pk=options["study"]).first()
        if study is None:
            raise CommandError(f"there is no study {options['study']}")
        user = (
            User.objects.filter(username=options["coordinator"]).first()
            if options["coordinator"]
            else study.coordinators.order_by("pk").first()
        )
        if user is None:
            raise CommandError("the study has no coordinator; pass --coordinator")
        form = power_form(study, user)
        data = {name: form.initial.get(name) for name in form.fields}
        if options["from_study"]:
            data["heterogeneity"] = f"study:{options['from_study']}"
        elif options["rater_taste"] is not None or options["case_effect"] is not None:
            data["heterogeneity"] = "manual"
        for name in (
            "effect",
            "cases",
            "raters",
            "raters_per_item",
            "items_per_rater",
            "rater_taste",
            "case_effect",
            "simulations",
        ):
            if options.get(name) is not None:
                data[name] = options[name]
        form = power_form(study, user, {k: "" if v is None else v for k, v in data.items()})
        if not form.is_valid():
            errors = "; ".join(
                f"{form.fields[field].label}: {' '.join(map(str, messages))}"
                if field in form.fields
                else " ".join(map(str, messages))
                for field, messages in form.errors.items()
            )
            raise CommandError(errors)
        try:
            started = services.power_analysis_start(
                study=study, requested_by=user, form=form, run_here=True
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        analysis = started.analysis
        if analysis.status != analysis.Status.SUCCEEDED:
            raise CommandError(f"the power analysis failed: {analysis.error}")
        result, inputs = analysis.result, analysis.inputs
        assert result is not None  # a succeeded analysis has its result
        if options["format"] == "json":
            self.stdout.write(json.dumps({"inputs": inputs, "result": result}, indent=2))
            return
        unit = "win rate" if inputs["kind"] == "preference" else "points"
        mde = result["minimum_detectable_effect"]
        lines = [
            f"{study.title}: primary endpoint {inputs['kind']}",
            f"design: {inputs['cases']} cases, {inputs['raters']} physicians, "
            f"{inputs['raters_per_item']} per item ({result['items_per_rater']:.0f} items each)",
            f"heterogeneity: taste SD {inputs['rater_taste']:.2f}, case SD "
            f"{inputs['case_effect']:.2f} ({inputs['heterogeneity_source']})",
            f"power for an effect of {inputs['effect']} ({unit}): {100 * result['power']:.1f}% "
            f"± {100 * 1.96 * result['mc_error']:.1f} (Monte Carlo, {result['simulations']} "
            "simulated studies)",
            "minimum detectable effect at 80%: "
            + (f"{mde:.3f}" if mde is not None else result["mde_note"]),
            f"physician-hours: {result['physician_hours']:.1f} ({result['seats']} items at "
            f"{result['seconds_per_item']:.0f} s; {inputs['timing_source']})",
            "power by cases: "
            + ", ".join(f"{p['cases']}: {100 * p['power']:.0f}%" for p in result["curve"]),
        ]
        self.stdout.write("\n".join(lines))
