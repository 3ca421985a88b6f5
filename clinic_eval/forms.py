from __future__ import annotations

from django import forms
from django.core.files.uploadedfile import UploadedFile

from clinic_eval import services
from clinic_eval.models import Arm, DataImport, Study


class StudyCreateForm(forms.Form):
    title = forms.CharField(max_length=200)
    question = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The clinical question the study answers.",
    )


class StudyTransitionForm(forms.Form):
    to_status = forms.ChoiceField(choices=Study.Status.choices)


class ArmCreateForm(forms.Form):
    label = forms.CharField(
        max_length=64, help_text="Coordinators see this label; physicians never do."
    )
    kind = forms.ChoiceField(choices=Arm.Kind.choices)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class DataImportForm(forms.Form):
    kind = forms.ChoiceField(choices=DataImport.Kind.choices, initial=DataImport.Kind.CASES)
    file = forms.FileField(help_text="JSON Lines (.jsonl) or CSV (.csv), UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "From the file name"), *DataImport.Format.choices], required=False
    )

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        try:
            services.data_import_check_size(filename=upload.name, size=upload.size or 0)
        except services.DomainError as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload
