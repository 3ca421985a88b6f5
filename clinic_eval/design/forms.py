from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms

from clinic_eval.config import Design
from clinic_eval.models import Study

if TYPE_CHECKING:
    from clinic_eval.models import User


def _pair_key(arms: list[str]) -> str:
    return " | ".join(sorted(arms))


class StudyDesignForm(forms.Form):
    """The coordinator's design, rubric and analysis plan, turned into the study's JSON."""

    mode = forms.ChoiceField(
        choices=[
            ("pairwise", "Pairwise (A / B)"),
            ("best_of_n", "Best of N"),
            ("rubric", "Rubric grading (met / not met per criterion)"),
        ]
    )
    pairs = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Pairwise: every pair of arms to compare.",
    )
    best_of_n_arms = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Best-of-N arms",
        help_text="Best of N: the arms shown together; the rater picks the best.",
    )
    rubric_arms = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Arms graded on the rubric",
        help_text="Rubric grading: each item shows one of these arms' responses, blinded.",
    )
    rubric_side_by_side = forms.BooleanField(
        required=False,
        label="Grade the chosen arms side by side",
        help_text="One item shows every chosen arm's response (A, B, ...), each graded.",
    )
    rubric_verifiers = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=10,
        label="Physicians who must verify each rubric",
        help_text="A case is graded only once its criteria rubric has this many verifications.",
    )
    allow_tie = forms.BooleanField(required=False, label="Allow a tie (pairwise)")
    allow_both_unacceptable = forms.BooleanField(required=False, label="Allow “none acceptable”")
    rationale_required = forms.BooleanField(required=False)
    raters_per_item = forms.IntegerField(min_value=1, max_value=50)
    cases_per_rater = forms.IntegerField(
        min_value=1,
        required=False,
        label="Items per rater",
        help_text="The most items one physician rates; cases are sampled to fit. Empty: all.",
    )
    repeat_percent = forms.IntegerField(
        min_value=0,
        max_value=50,
        label="Repeated items (%)",
        help_text="Shown again later, sides swapped, to measure intra-rater consistency.",
    )
    min_case_gap = forms.IntegerField(
        min_value=1,
        max_value=100,
        required=False,
        label="Items of one case at least this many places apart",
        help_text="2: never next to each other (empty means 2). Each queue is spread as far "
        "as it allows; the preview says where a queue falls short. A repeat always comes at "
        "least max(5, a third of the queue) after its original.",
    )
    idle_timeout_minutes = forms.IntegerField(
        min_value=1, max_value=24 * 60, label="Session idle timeout (minutes)"
    )
    raters: forms.ModelMultipleChoiceField[User] = forms.ModelMultipleChoiceField(
        queryset=None, required=False, widget=forms.CheckboxSelectMultiple
    )
    rubric = forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}),
        help_text="Likert dimensions with scale and anchor wording, the hallucination flag, and "
        'span categories ("spans": {"categories": [...]}).',
    )
    # The rubric's span annotation (rubric["spans"]); its categories are edited in the JSON.
    spans_enabled = forms.BooleanField(
        required=False,
        label="Physicians mark spans",
        help_text="Where a response goes wrong: a range of its text (or an omission), a "
        "category and a harm level. The response is then shown exactly as written.",
    )
    spans_flag = forms.ChoiceField(
        required=False,
        choices=[
            ("asked", "Asked, as a question per response"),
            ("derived", "Derived from the spans (the question is not asked)"),
        ],
        label="Hallucination flag",
    )
    primary_kind = forms.ChoiceField(
        choices=[("preference", "Preference"), ("likert", "Likert dimension")],
        label="Primary endpoint",
    )
    primary_arm_a = forms.ChoiceField(required=False, label="Arm")
    primary_arm_b = forms.ChoiceField(required=False, label="versus arm")
    primary_dimension = forms.CharField(required=False, label="Likert dimension key")
    tests = forms.MultipleChoiceField(
        choices=[
            ("sign", "Sign test on preferences"),
            ("wilcoxon", "Wilcoxon signed-rank on Likert"),
            ("friedman", "Friedman across arms"),
            ("bradley_terry", "Bradley-Terry strengths"),
        ],
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )
    alpha = forms.FloatField(min_value=0.001, max_value=0.2)
    correction = forms.ChoiceField(
        choices=[("holm", "Holm"), ("bh", "Benjamini-Hochberg (FDR)")],
        label="Multiple-comparison correction",
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    # The adjudication rule (analysis_plan["adjudication"]): a senior physician resolves an item
    # whose raters disagree this way; pre-registered with the rest of the plan.
    adjudication_enabled = forms.BooleanField(
        required=False,
        label="Adjudicate disagreements",
        help_text="Pairwise and best-of-N only. When an item's last rater submits and any "
        "condition below holds, the item goes to one adjudicator.",
    )
    adjudication_preference_conflict = forms.BooleanField(
        required=False, label="Decisive preferences that disagree"
    )
    adjudication_likert_gap = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=10,
        label="Likert scores differ by at least",
        help_text="On any dimension, for one response. Empty: off.",
    )
    adjudication_severe_single = forms.BooleanField(
        required=False,
        label="A severe-harm span or most severe hallucination flag from only some raters",
    )
    adjudicators = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Physicians among the raters above; an item goes to one who never rated it "
        "and did not write its case, the one with the fewest open items first.",
    )

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        from clinic_eval.models import User

        # Unbound (no data, or None as the view passes on a GET): show what is saved.
        if not (args and args[0] is not None) and "initial" not in kwargs:
            kwargs["initial"] = self.initial_for(study)
        super().__init__(*args, **kwargs)
        labels = list(study.arms.order_by("label").values_list("label", flat=True))
        pairs = [_pair_key([a, b]) for i, a in enumerate(labels) for b in labels[i + 1 :]]
        self._choice_field("pairs").choices = [(p, p) for p in pairs]
        self._choice_field("best_of_n_arms").choices = [(label, label) for label in labels]
        self._choice_field("rubric_arms").choices = [(label, label) for label in labels]
        arm_choices = [("", "—"), *((label, label) for label in labels)]
        self._choice_field("primary_arm_a").choices = arm_choices
        self._choice_field("primary_arm_b").choices = arm_choices
        raters = cast("forms.ModelMultipleChoiceField[User]", self.fields["raters"])
        raters.queryset = User.objects.filter(role=User.Role.PHYSICIAN, is_active=True).order_by(
            "username"
        )
        # Bare usernames; the stubs declare a method, which this instance attribute overrides.
        raters.label_from_instance = lambda user: user.get_username()  # type: ignore[method-assign, assignment]
        usernames = list(raters.queryset.values_list("username", flat=True))
        self._choice_field("adjudicators").choices = [(name, name) for name in usernames]

    def _choice_field(self, name: str) -> forms.ChoiceField:
        return cast(forms.ChoiceField, self.fields[name])

    @staticmethod
    def initial_for(study: Study) -> dict:
        design, plan = study.design_config, study.plan_config
        sets = [list(arms) for arms in design.arm_sets]
        mode = design.mode
        return {
            "mode": mode,
            "pairs": [_pair_key(s) for s in sets] if mode == "pairwise" else [],
            "best_of_n_arms": sets[0] if sets and mode == "best_of_n" else [],
            "rubric_arms": sorted({a for s in sets for a in s}) if mode == "rubric" else [],
            "rubric_side_by_side": mode == "rubric" and any(len(s) > 1 for s in sets),
            "rubric_verifiers": design.rubric_verifiers,
            "allow_tie": design.allow_tie,
            "allow_both_unacceptable": design.allow_both_unacceptable,
            "rationale_required": design.rationale_required,
            "raters_per_item": design.raters_per_item,
            "cases_per_rater": design.cases_per_rater,
            "repeat_percent": round(100 * design.repeat_fraction),
            "min_case_gap": design.min_case_gap,
            "idle_timeout_minutes": design.idle_timeout_minutes,
            "raters": list(study.rater_links.values_list("rater_id", flat=True)),
            "rubric": study.rubric,
            "spans_enabled": study.rubric_config.spans.enabled,
            "spans_flag": study.rubric_config.spans.hallucination_flag,
            "primary_kind": plan.primary.kind,
            "primary_arm_a": plan.primary.arm_a,
            "primary_arm_b": plan.primary.arm_b,
            "primary_dimension": plan.primary.dimension,
            "tests": list(plan.tests),
            "alpha": plan.alpha,
            "correction": plan.correction,
            "notes": plan.notes,
            "adjudication_enabled": plan.adjudication.enabled,
            "adjudication_preference_conflict": plan.adjudication.preference_conflict,
            "adjudication_likert_gap": plan.adjudication.likert_gap,
            "adjudication_severe_single": plan.adjudication.severe_single,
            "adjudicators": list(plan.adjudication.adjudicators),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        raters = {user.get_username() for user in data.get("raters") or []}
        outside = [name for name in data.get("adjudicators") or [] if name not in raters]
        if outside:
            self.add_error(
                "adjudicators",
                f"Adjudicators must be raters on this study: {', '.join(outside)} is not.",
            )
        return data

    def to_config(self) -> dict:
        """The validated form as the arguments of ``services.study_design_update``."""
        data = self.cleaned_data
        best_of_n = 3
        if data["mode"] == "pairwise":
            arm_sets = [pair.split(" | ") for pair in data["pairs"]]
        elif data["mode"] == "rubric":
            chosen = sorted(data["rubric_arms"])
            together = data["rubric_side_by_side"] and chosen
            arm_sets = [chosen] if together else [[arm] for arm in chosen]
        else:
            arm_sets = [sorted(data["best_of_n_arms"])] if data["best_of_n_arms"] else []
            best_of_n = max(2, len(data["best_of_n_arms"]))
        return {
            "design": {
                "mode": data["mode"],
                "best_of_n": best_of_n,
                "arm_sets": arm_sets,
                "allow_tie": data["allow_tie"],
                "allow_both_unacceptable": data["allow_both_unacceptable"],
                "rationale_required": data["rationale_required"],
                "raters_per_item": data["raters_per_item"],
                "cases_per_rater": data["cases_per_rater"],
                "repeat_fraction": data["repeat_percent"] / 100,
                "min_case_gap": data["min_case_gap"] or Design.model_fields["min_case_gap"].default,
                "idle_timeout_minutes": data["idle_timeout_minutes"],
                "rubric_verifiers": data["rubric_verifiers"] or 1,
            },
            # The checkbox and the flag's choice win over the same keys in the JSON.
            "rubric": {
                **data["rubric"],
                "spans": {
                    **(data["rubric"].get("spans") or {}),
                    "enabled": data["spans_enabled"],
                    "hallucination_flag": data["spans_flag"] or "asked",
                },
            },
            "analysis_plan": {
                "primary": {
                    "kind": data["primary_kind"],
                    "arm_a": data["primary_arm_a"],
                    "arm_b": data["primary_arm_b"],
                    "dimension": data["primary_dimension"].strip(),
                },
                "tests": data["tests"],
                "alpha": data["alpha"],
                "correction": data["correction"],
                "notes": data["notes"],
                "adjudication": {
                    "enabled": data["adjudication_enabled"],
                    "preference_conflict": data["adjudication_preference_conflict"],
                    "likert_gap": data["adjudication_likert_gap"],
                    "severe_single": data["adjudication_severe_single"],
                    # In the list's order (by username), however they were sent.
                    "adjudicators": sorted(data["adjudicators"]),
                },
            },
            "rater_ids": [user.pk for user in data["raters"]],
        }


class StudyTransitionForm(forms.Form):
    to_status = forms.ChoiceField(choices=Study.Status.choices)
