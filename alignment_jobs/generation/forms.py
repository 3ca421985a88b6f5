from __future__ import annotations

import re
from typing import Any, cast

from django import forms

from alignment_jobs import prompts
from alignment_jobs.models import GenerationJob, GenerationSpec
from clinic_eval.models import Arm, Study


def split_ids(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,;]+", text) if part]


class SpecForm(forms.Form):
    base_model_path = forms.CharField(
        max_length=500,
        help_text="Absolute path of a Hugging Face checkpoint folder on the workers' disk.",
    )
    adapter_path = forms.CharField(
        max_length=500,
        required=False,
        help_text="Optional LoRA adapter folder (PEFT) applied on the base model.",
    )
    system_prompt = forms.CharField(
        required=False,
        initial=prompts.DEFAULT_SYSTEM_PROMPT,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    user_template = forms.CharField(
        initial=prompts.DEFAULT_USER_TEMPLATE,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text=(
            "Placeholders: {{ narrative }}, {{ stratum }}, {{ fields }} (all, one per line), "
            "{{ fields.<name> }}, {{ answer_format }} (the closing block to write)."
        ),
    )
    use_chat_template = forms.BooleanField(required=False, initial=True)
    few_shot_k = forms.IntegerField(
        min_value=0, max_value=16, initial=0, label="Few-shot examples (k)"
    )
    few_shot_pool = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Case ids the examples are drawn from, nearest by structured fields.",
    )
    temperature = forms.FloatField(min_value=0, max_value=5, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=1.0)
    max_tokens = forms.IntegerField(min_value=1, max_value=32_768, initial=512)
    n_samples = forms.IntegerField(min_value=1, max_value=16, initial=1)
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    dtype = forms.ChoiceField(choices=GenerationSpec.Dtype.choices)
    tensor_parallel_size = forms.IntegerField(min_value=1, max_value=16, initial=1)

    def clean_few_shot_pool(self) -> list[str]:
        return split_ids(self.cleaned_data["few_shot_pool"])

    @classmethod
    def for_spec(cls, spec: GenerationSpec | None, data: dict | None = None) -> SpecForm:
        if spec is None:
            return cls(data)
        initial = {name: getattr(spec, name) for name in cls.base_fields}
        initial["few_shot_pool"] = "\n".join(spec.few_shot_pool)
        return cls(data, initial=initial)


class JobLaunchForm(forms.Form):
    SCOPE_ALL = "all"
    SCOPE_STRATUM = "stratum"
    SCOPE_IDS = "ids"

    arms = forms.ModelMultipleChoiceField(
        queryset=Arm.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    scope = forms.ChoiceField(
        choices=[
            (SCOPE_ALL, "All cases"),
            (SCOPE_STRATUM, "One stratum"),
            (SCOPE_IDS, "These case ids"),
        ],
        initial=SCOPE_ALL,
        widget=forms.RadioSelect,
    )
    stratum = forms.ChoiceField(required=False)
    case_ids = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    engine = forms.ChoiceField(choices=GenerationJob.Engine.choices)

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        arms = study.arms.filter(kind=Arm.Kind.MODEL, generation_spec__isnull=False)
        arms_field = cast(forms.ModelMultipleChoiceField, self.fields["arms"])
        arms_field.queryset = arms.order_by("label")
        arms_field.initial = list(arms.values_list("pk", flat=True))
        stratum_field = cast(forms.ChoiceField, self.fields["stratum"])
        stratum_field.choices = [("", "—"), *((s, s) for s in study.strata)]

    def clean(self) -> dict[str, Any]:
        # Form.clean returns self.cleaned_data (typed Optional for subclasses that return None).
        super().clean()
        cleaned = self.cleaned_data
        scope = cleaned.get("scope")
        if scope == self.SCOPE_STRATUM and not cleaned.get("stratum"):
            self.add_error("stratum", "Choose a stratum.")
        if scope == self.SCOPE_IDS:
            cleaned["case_ids"] = split_ids(cleaned.get("case_ids", ""))
            if not cleaned["case_ids"]:
                self.add_error("case_ids", "List at least one case id.")
        return cleaned

    def launch_arguments(self) -> dict:
        scope = self.cleaned_data["scope"]
        return {
            "arms": list(self.cleaned_data["arms"]),
            "engine": self.cleaned_data["engine"],
            "stratum": self.cleaned_data["stratum"] if scope == self.SCOPE_STRATUM else "",
            "case_ids": self.cleaned_data["case_ids"] if scope == self.SCOPE_IDS else None,
        }


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approved", "Approve"), ("excluded", "Exclude")])
