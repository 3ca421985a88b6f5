"""Panels another app adds to a study's rubric page, so that clinic_eval never imports it.

``alignment_jobs`` registers its model drafting and grading panel when its app is ready; the
rubric page renders whatever is registered, in registration order.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.utils.safestring import SafeString

from clinic_eval.models import Study

RubricPanel = Callable[[HttpRequest, Study], SafeString]

_panels: list[RubricPanel] = []


def rubric_panel_register(panel: RubricPanel) -> None:
    if panel not in _panels:
        _panels.append(panel)


def rubric_panels_render(*, request: HttpRequest, study: Study) -> list[SafeString]:
    return [panel(request, study) for panel in _panels]
