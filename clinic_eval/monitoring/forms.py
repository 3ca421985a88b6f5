from __future__ import annotations

from django import forms

from clinic_eval.models import Study


class ReassignForm(forms.Form):
    to_rater = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="The pool (any rater with time)"
    )

    def __init__(self, *args: object, study: Study, **kwargs: object) -> None:
        from clinic_eval.models import User

        super().__init__(*args, **kwargs)
        field = self.fields["to_rater"]
        field.queryset = User.objects.filter(  # type: ignore[attr-defined]
            rated_studies=study, is_active=True
        ).order_by("username")
        field.label_from_instance = lambda user: user.get_username()  # type: ignore[attr-defined]
