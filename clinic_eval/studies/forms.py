from __future__ import annotations

from django import forms

from clinic_eval.models import Arm


class StudyCreateForm(forms.Form):
    title = forms.CharField(max_length=200)
    question = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The clinical question the study answers.",
    )


class ArmCreateForm(forms.Form):
    label = forms.CharField(
        max_length=64, help_text="Coordinators see this label; physicians never do."
    )
    kind = forms.ChoiceField(choices=Arm.Kind.choices)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
