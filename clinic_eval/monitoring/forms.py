from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms

from clinic_eval.models import Study

if TYPE_CHECKING:
    from clinic_eval.models import User


class ReassignForm(forms.Form):
    to_rater: forms.ModelChoiceField[User] = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="The pool (any rater with time)"
    )

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        from clinic_eval.models import User

        super().__init__(*args, **kwargs)
        field = cast("forms.ModelChoiceField[User]", self.fields["to_rater"])
        field.queryset = User.objects.filter(rated_studies=study, is_active=True).order_by(
            "username"
        )
        # Bare usernames; the stubs declare a method, which this instance attribute overrides.
        field.label_from_instance = lambda user: user.get_username()  # type: ignore[method-assign, assignment]


class AdjudicationAssignForm(forms.Form):
    """Hand an unassigned adjudication (by its public id) to a physician on the study; the
    service checks that they may take it."""

    adjudication = forms.CharField(max_length=24)
    adjudicator: forms.ModelChoiceField[User] = forms.ModelChoiceField(queryset=None)

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        from clinic_eval.models import User

        super().__init__(*args, **kwargs)
        field = cast("forms.ModelChoiceField[User]", self.fields["adjudicator"])
        field.queryset = User.objects.filter(
            rated_studies=study, is_active=True, role=User.Role.PHYSICIAN
        )
