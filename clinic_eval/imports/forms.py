from __future__ import annotations

from django import forms
from django.core.files.uploadedfile import UploadedFile

from clinic_eval.errors import DomainError
from clinic_eval.imports import services
from clinic_eval.models import DataImport


class DataImportForm(forms.Form):
    kind = forms.ChoiceField(choices=DataImport.Kind.choices, initial=DataImport.Kind.CASES)
    file = forms.FileField(help_text="JSON Lines (.jsonl) or CSV (.csv), UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "From the file name"), *DataImport.Format.choices], required=False
    )

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        assert upload.name is not None  # FileField refuses a file without a name
        try:
            services.data_import_check_size(filename=upload.name, size=upload.size or 0)
        except DomainError as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload
