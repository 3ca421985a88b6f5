"""The planner's form: inputs with clear errors when they are out of range."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from clinic_eval.design.power.selectors import PlannerDefaults
from clinic_eval.models import Study
from clinic_eval.statistics import power as power_lib

# Typical heterogeneity when nothing better is known: moderate physician taste and case effects.
TYPICAL = (0.3, 0.5)


class PowerForm(forms.Form):
    effect = forms.FloatField(
        label="Expected effect",
        help_text="Preference: the share of decisive judgments the first arm wins (0.5 is no "
        "difference). Likert: the mean score difference in points.",
    )
    heterogeneity = forms.ChoiceField(label="Rater and case heterogeneity")
    rater_taste = forms.FloatField(
        label="Physician taste SD (per arm)", min_value=0.0, max_value=3.0, required=False
    )
    case_effect = forms.FloatField(
        label="Case effect SD (per arm)", min_value=0.0, max_value=3.0, required=False
    )
    cases = forms.IntegerField(label="Cases", min_value=3, max_value=100_000)
    raters_per_item = forms.IntegerField(label="Raters per item", min_value=1, max_value=50)
    raters = forms.IntegerField(label="Physicians", min_value=3, max_value=1_000)
    items_per_rater = forms.IntegerField(
        label="Most items per physician",
        min_value=1,
        required=False,
        help_text="Leave empty for no limit; a limit caps the number of cases that fit.",
    )
    simulations = forms.IntegerField(
        label="Simulated studies", min_value=100, max_value=5_000, initial=500
    )

    def __init__(
        self,
        data: Any = None,
        *,
        defaults: PlannerDefaults,
        closed_studies: list[Study],
    ) -> None:
        initial = {
            "effect": 0.6 if defaults.kind == "preference" else 0.3,
            "heterogeneity": "typical",
            "rater_taste": TYPICAL[0],
            "case_effect": TYPICAL[1],
            "cases": max(defaults.cases, 3),
            "raters_per_item": defaults.raters_per_item,
            "raters": max(defaults.raters, 3),
            "items_per_rater": defaults.items_per_rater,
            "simulations": 500,
        }
        super().__init__(data, initial=initial)
        self.defaults = defaults
        self._closed = {str(study.pk): study for study in closed_studies}
        cast(forms.ChoiceField, self.fields["heterogeneity"]).choices = [
            ("typical", f"Typical (taste SD {TYPICAL[0]}, case SD {TYPICAL[1]})"),
            ("none", "None (every physician and case alike)"),
            ("manual", "As entered below"),
        ] + [
            (f"study:{pk}", f"Estimated from the closed study “{study.title}”")
            for pk, study in self._closed.items()
        ]

    def closed_study(self) -> Study | None:
        choice = self.cleaned_data.get("heterogeneity", "")
        return (
            self._closed.get(choice.removeprefix("study:")) if choice.startswith("study:") else None
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # BaseForm.clean returns cleaned_data
        if self.defaults.problem:
            raise forms.ValidationError(f"The planner cannot run yet: {self.defaults.problem}.")
        if data.get("heterogeneity") == "manual" and (
            data.get("rater_taste") is None or data.get("case_effect") is None
        ):
            raise forms.ValidationError("Enter both standard deviations, or choose another source.")
        if self.errors:
            return data
        problems = self.inputs(rater_taste=0.0, case_effect=0.0).check()
        if problems:
            raise forms.ValidationError([p[0].upper() + p[1:] + "." for p in problems])
        return data

    def planned_cases(self) -> int:
        data = self.cleaned_data
        cases = data["cases"]
        cap = data.get("items_per_rater")
        if cap:
            per_case = self.defaults.pairs_per_case * data["raters_per_item"]
            cases = min(cases, cap * data["raters"] // per_case)
        return cases

    def inputs(
        self,
        *,
        rater_taste: float,
        case_effect: float,
        seconds_per_item: float = 90.0,
        seed: int = 0,
    ) -> power_lib.PlannerInputs:
        data = self.cleaned_data
        return power_lib.PlannerInputs(
            kind=self.defaults.kind,  # type: ignore[arg-type]
            effect=data["effect"],
            cases=self.planned_cases(),
            raters=data["raters"],
            raters_per_item=data["raters_per_item"],
            rater_taste=rater_taste,
            case_effect=case_effect,
            pairs_per_case=self.defaults.pairs_per_case,
            repeat_fraction=self.defaults.repeat_fraction,
            alpha=self.defaults.alpha,
            simulations=data["simulations"],
            seed=seed,
            seconds_per_item=seconds_per_item,
        )

    def heterogeneity_values(self) -> tuple[float, float] | None:
        """The SDs for the typical, none and manual choices (None: estimate from a study)."""
        choice = self.cleaned_data["heterogeneity"]
        if choice == "typical":
            return TYPICAL
        if choice == "none":
            return (0.0, 0.0)
        if choice == "manual":
            return (self.cleaned_data["rater_taste"], self.cleaned_data["case_effect"])
        return None
