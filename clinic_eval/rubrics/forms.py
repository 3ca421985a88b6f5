from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from clinic_eval.models import CaseRubric, RubricCriterion
from clinic_eval.rubrics.selectors import RubricState
from clinic_eval.rubrics.services import MAX_CRITERION_TEXT, MAX_POINTS, CriterionInput

MAX_RUBRIC_FILE_BYTES = 5 * 1024 * 1024


class CriterionForm(forms.Form):
    """One criterion as a physician or coordinator writes it; the service checks the rest."""

    text = forms.CharField(
        max_length=MAX_CRITERION_TEXT,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Criterion",
    )
    points = forms.IntegerField(
        min_value=-MAX_POINTS,
        max_value=MAX_POINTS,
        help_text="Negative for something the answer must not do.",
    )
    axis = forms.ChoiceField(choices=RubricCriterion.Axis.choices)
    level = forms.ChoiceField(
        choices=RubricCriterion.Level.choices, initial=RubricCriterion.Level.EXAMPLE
    )

    def __init__(self, *args: Any, current_axis: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A study may use its own axis keys; keep the criterion's own one selectable.
        axis_field: forms.ChoiceField = self.fields["axis"]  # type: ignore[assignment]
        known = {value for value, _ in RubricCriterion.Axis.choices}
        if current_axis and current_axis not in known:
            axis_field.choices = [*RubricCriterion.Axis.choices, (current_axis, current_axis)]

    @classmethod
    def for_criterion(
        cls, criterion: RubricCriterion, *, prefix: str, data: Any = None
    ) -> CriterionForm:
        initial = {
            "text": criterion.text,
            "points": criterion.points,
            "axis": criterion.axis,
            "level": criterion.level,
        }
        return cls(data, prefix=prefix, initial=initial, current_axis=criterion.axis)

    def clean_points(self) -> int:
        points: int = self.cleaned_data["points"]
        if points == 0:
            raise forms.ValidationError("Points cannot be 0: give a positive or a negative value.")
        return points

    def criterion_input(self) -> CriterionInput:
        data = self.cleaned_data
        return CriterionInput(
            text=data["text"].strip(), points=data["points"], axis=data["axis"], level=data["level"]
        )


class SeenVersionForm(forms.Form):
    """The rubric version the physician's page showed (sent with a verification or an edit)."""

    version = forms.IntegerField(min_value=1, required=False)


class RubricImportForm(forms.Form):
    file = forms.FileField(
        help_text=(
            'JSON Lines, UTF-8: one rubric per line, {"case_id" or "stratum", "rubrics": '
            '[{"criterion", "points", "tags"}]} as in HealthBench.'
        )
    )

    def clean_file(self) -> str:
        upload: UploadedFile = self.cleaned_data["file"]
        if (upload.size or 0) > MAX_RUBRIC_FILE_BYTES:
            raise forms.ValidationError(
                f"The file is larger than {MAX_RUBRIC_FILE_BYTES // (1024 * 1024)} MB."
            )
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None


class RubricFilterForm(forms.Form):
    STATES = [("", "Any"), *RubricState.choices]

    stratum = forms.CharField(required=False, max_length=80)
    state = forms.ChoiceField(choices=STATES, required=False)
    source = forms.ChoiceField(
        choices=[("", "Any"), *CaseRubric.Source.choices],
        required=False,
    )
