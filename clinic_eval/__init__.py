from __future__ import annotations

from clinic_eval.celery import app as celery_app

__all__ = ["celery_app"]
