"""Prompt building: templates over a case's fields, few-shot retrieval, and the chat layout.

Pure functions over plain data, so the prompt a job renders can be reproduced and hashed
without a database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?)\s*\}\}")
SIMPLE_NAMES = ("narrative", "stratum", "fields", "answer_format")

DEFAULT_SYSTEM_PROMPT = (
    "You are a reproductive endocrinologist. Read the de-identified case and recommend "
    "a treatment plan. Explain your reasoning briefly, then end with the decision block."
)
DEFAULT_USER_TEMPLATE = "Case:\n{{ narrative }}\n\n{{ answer_format }}"


class TemplateError(ValueError):
    """A template that cannot be rendered for a case, with a message for the coordinator."""


@dataclass(frozen=True)
class CaseData:
    id: int
    external_id: str
    stratum: str
    narrative: str
    fields: Mapping[str, Any]
    ground_truth: Mapping[str, Any]


@dataclass(frozen=True)
class RenderedPrompt:
    messages: list[dict[str, str]]
    few_shot_ids: list[str]


def template_problems(template: str) -> list[str]:
    """Placeholders a template uses that no case could fill."""
    problems = []
    for name in PLACEHOLDER.findall(template):
        head, _, key = name.partition(".")
        if key and head != "fields":
            problems.append(f"{{{{ {name} }}}}: only fields.<name> may have a dot")
        elif not key and name not in SIMPLE_NAMES:
            known = ", ".join([*SIMPLE_NAMES, "fields.<name>"])
            problems.append(f"{{{{ {name} }}}} is not a known placeholder ({known})")
    stray = PLACEHOLDER.sub("", template)
    if "{{" in stray or "}}" in stray:
        problems.append("unbalanced {{ or }}: write placeholders as {{ name }}")
    return problems


def answer_format(layers: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["End your answer with these lines, one label each (several for a multi-label line):"]
    for layer in layers.values():
        joiner = "; " if layer.get("multi") else " | "
        lines.append(f"{layer['title']}: " + joiner.join(layer["labels"]))
    return "\n".join(lines)


def decision_block(decision: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]]) -> str:
    """The closing lines of an ideal answer: the few-shot demonstrations end with these."""
    lines = []
    for key, layer in layers.items():
        value = decision.get(key)
        if value in (None, "", []):
            continue
        text = "; ".join(value) if isinstance(value, list) else str(value)
        lines.append(f"{layer['title']}: {text}")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_template(
    template: str, case: CaseData, *, layers: Mapping[str, Mapping[str, Any]]
) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        head, _, key = name.partition(".")
        if key:
            if key not in case.fields:
                raise TemplateError(f"case {case.external_id} has no field {key!r}")
            return _format_value(case.fields[key])
        if name == "fields":
            return "\n".join(f"{k}: {_format_value(v)}" for k, v in sorted(case.fields.items()))
        if name == "answer_format":
            return answer_format(layers)
        return str(getattr(case, name))

    return PLACEHOLDER.sub(fill, template)


def _stable_fraction(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _numeric_scales(pool: Sequence[CaseData]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for case in pool:
        for key, value in case.fields.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    scales = {}
    for key, column in values.items():
        mean = sum(column) / len(column)
        spread = math.sqrt(sum((v - mean) ** 2 for v in column) / len(column))
        scales[key] = spread or 1.0
    return scales


def field_distance(a: CaseData, b: CaseData, scales: Mapping[str, float]) -> float:
    """Mean per-field distance: standardised for numbers, 0/1 for anything else."""
    keys = set(a.fields) | set(b.fields)
    if not keys:
        return 0.0 if a.stratum == b.stratum else 1.0
    total = 0.0
    for key in keys:
        if key not in a.fields or key not in b.fields:
            total += 1.0
            continue
        left, right = a.fields[key], b.fields[key]
        if key in scales and isinstance(left, int | float) and isinstance(right, int | float):
            total += min(abs(float(left) - float(right)) / scales[key], 3.0) / 3.0
        else:
            total += 0.0 if left == right else 1.0
    stratum_penalty = 0.0 if a.stratum == b.stratum else 0.5
    return total / len(keys) + stratum_penalty


def few_shot_examples(
    case: CaseData, pool: Sequence[CaseData], *, k: int, seed: int
) -> list[CaseData]:
    """The k pool cases nearest to this one; ties broken by the seed; never the case itself."""
    if k <= 0:
        return []
    candidates = [
        other for other in pool if other.id != case.id and other.external_id != case.external_id
    ]
    scales = _numeric_scales(candidates)
    ranked = sorted(
        candidates,
        key=lambda other: (
            round(field_distance(case, other, scales), 9),
            _stable_fraction(seed, case.external_id, other.external_id),
        ),
    )
    return ranked[:k]


def build_messages(
    case: CaseData,
    *,
    system_prompt: str,
    user_template: str,
    layers: Mapping[str, Mapping[str, Any]],
    examples: Sequence[CaseData] = (),
) -> RenderedPrompt:
    """System, then one user/assistant turn per demonstration, then the case itself."""
    messages = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    for example in examples:
        messages.append(
            {"role": "user", "content": render_template(user_template, example, layers=layers)}
        )
        messages.append(
            {"role": "assistant", "content": decision_block(example.ground_truth, layers)}
        )
    messages.append(
        {"role": "user", "content": render_template(user_template, case, layers=layers)}
    )
    return RenderedPrompt(messages=messages, few_shot_ids=[e.external_id for e in examples])


def plain_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The layout for a model used without its chat template: turns as plain paragraphs."""
    parts = []
    for message in messages:
        if message["role"] == "assistant":
            parts.append(f"Answer:\n{message['content']}")
        else:
            parts.append(message["content"])
    parts.append("Answer:\n")
    return "\n\n".join(parts)


def render_prompt(
    messages: Sequence[Mapping[str, str]],
    *,
    use_chat_template: bool,
    apply_chat_template: Callable[[list[dict[str, str]]], str],
) -> str:
    if use_chat_template:
        return apply_chat_template([dict(m) for m in messages])
    return plain_prompt(messages)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def request_seed(spec_seed: int, case_external_id: str) -> int:
    """A per-case seed, so a case's sample does not depend on which shard or batch it ran in."""
    return int(_stable_fraction("request", spec_seed, case_external_id) * 2**31)
