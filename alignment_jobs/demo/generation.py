"""Tiny local models for the demo study, so a coordinator can run a real CPU job in the browser."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from alignment_jobs.demo.tiny_models import build_tiny_models
from alignment_jobs.generation import specs
from clinic_eval.models import Arm, Study
from clinic_eval.studies.services import arm_create

DEMO_MODEL_ARMS = {
    "SFT-tiny": ("sft", "LoRA adapter 'sft' on the tiny random-init Llama."),
    "DPO-tiny": ("dpo", "LoRA adapter 'dpo' on the tiny random-init Llama."),
    "GRPO-tiny": ("grpo", "LoRA adapter 'grpo' on the tiny random-init Llama."),
    "ICL-tiny": ("", "The tiny base model prompted with 2 nearest-case examples."),
}
FEW_SHOT_POOL_SIZE = 12


@dataclass(frozen=True)
class DemoModels:
    arms: list[str]
    skipped: str = ""


def demo_generation_seed(*, study: Study) -> DemoModels:
    """Build the tiny models (once) and give the demo study one model arm per adapter."""
    if importlib.util.find_spec("torch") is None:
        return DemoModels(arms=[], skipped="torch is not installed (pip install -e '.[ml]')")
    models = build_tiny_models(settings.VAR_DIR / "models" / "tiny")
    pool = list(study.cases.order_by("external_id").values_list("external_id", flat=True))
    pool = pool[:FEW_SHOT_POOL_SIZE]
    created = []
    with transaction.atomic():
        for label, (adapter, description) in DEMO_MODEL_ARMS.items():
            if study.arms.filter(label=label).exists():
                continue
            arm = arm_create(study=study, label=label, kind=Arm.Kind.MODEL, description=description)
            specs.spec_save(
                arm=arm,
                base_model_path=str(models.base),
                adapter_path=str(models.adapters[adapter]) if adapter else "",
                few_shot_k=0 if adapter else 2,
                few_shot_pool=[] if adapter else pool,
                max_tokens=48,
                temperature=0.7,
                seed=study.seed,
            )
            created.append(label)
    return DemoModels(arms=created)
