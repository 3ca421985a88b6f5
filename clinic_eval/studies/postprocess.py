"""Blinding clean-up, leak checks and decision parsing for every arm response.

Raters compare arms blind, so each response (generated or imported) goes through the same steps:
``display_text`` renders it identically whatever model wrote it, ``leak_flags`` lists what could
still reveal the arm for a coordinator to review, and ``parse_decision`` reads the closing
``<Title>: <value>`` block against the study's decision layers. Pure functions, standard library
only, so the pipeline, imports and tests can all use them without Django.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

LEAK_KINDS: Final[tuple[str, ...]] = (
    "self_identification",
    "vendor_or_model_name",
    "reasoning_trace",
    "special_token",
    "arm_label",
    "error_string",
    "empty",
)
EXCERPT_CHARS: Final = 80
_SHOWN_VALUE_CHARS: Final = 60
# Each clean-up pass only ever shortens the text, so a few passes reach a fixed point even when
# removing one token glues the pieces of another together.
_MAX_PASSES: Final = 8

# Zero-width characters, and control characters other than tab and newline (a sampling model
# emits them, PostgreSQL text refuses NUL, and a browser shows them as boxes or nothing).
_INVISIBLE = dict.fromkeys(
    [
        *map(ord, "\u200b\u200c\u200d\u2060\ufeff"),
        *(code for code in range(0x20) if chr(code) not in "\t\n"),
        *range(0x7F, 0xA0),
    ]
)
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"))
# Letters and digits are word characters; everything else (underscore included) is a boundary.
_START, _END = r"(?<![^\W_])", r"(?![^\W_])"


def _whole_words(alternatives: str) -> str:
    return rf"{_START}(?:{alternatives}){_END}"


_TAG = r"(?:think|thinking|reasoning|reflection)"
_ANY_TRACE_TAG = re.compile(rf"<\s*/?\s*{_TAG}\s*>", re.I)

# DeepSeek spells its tokens with fullwidth bars, e.g. <｜end▁of▁sentence｜>.
_TOKEN = (
    r"<[|｜][^<>|｜\n]{1,60}[|｜]>|</?s>|\[/?INST\]|<</?SYS>>"
    r"|<(?:pad|unk|eos|bos|end_of_turn|start_of_turn)>"
)
_TOKEN_RUN = re.compile(rf"(?:{_TOKEN})(?:\s*(?:{_TOKEN}))*", re.I)
# Turn openers carry a role word that belongs to the template, not to the answer.
_ROLE_TOKEN = re.compile(
    r"<\|start_header_id\|>\s*(?P<header>\w*)\s*<\|end_header_id\|>"
    r"|(?:<\|im_start\|>|<start_of_turn>)[ \t]*(?P<role>\w*)",
    re.I,
)
_OTHER_TURN_ROLES: Final = frozenset({"user", "human", "system"})
_LEADING_ROLE = re.compile(r"\A\s*(?:assistant|###[ \t]*response)[ \t]*(?::[ \t]*|(?=\n|\Z))", re.I)
_NEXT_TURN = re.compile(
    r"^[ \t]*(?:(?:user|human|assistant)[ \t]*:|###[ \t]*(?:instruction|input|human|user)\b)",
    re.I | re.M,
)

_ORGS = (
    r"(?:openai|anthropic|meta|google(?:\s+deepmind)?|deepmind|mistral(?:\s+ai)?"
    r"|alibaba(?:\s+cloud)?|deepseek|microsoft|hugging\s?face)"
)
_LEAK_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "self_identification": re.compile(
        _whole_words(
            # Bare "as an AI" also opens clinical phrases ("used as an AI-based ranking tool").
            r"as\s+an?\s+(?:ai|artificial\s+intelligence)"
            r"(?:\s+(?:language\s+)?model|\s+assistant|\s*,)"
            r"|as\s+an?\s+(?:large\s+)?language\s+model"
            r"|i(?:\s+am|['’]m)\s+(?:just\s+|only\s+)?an?\s+(?:ai|artificial\s+intelligence"
            r"|(?:large\s+)?language\s+model|chatbot)"
            rf"|(?:developed|trained|created|built|made)\s+by\s+(?:the\s+)?{_ORGS}(?![\w-])"
            r"|my\s+training\s+(?:data|cut-?off)|my\s+knowledge\s+cut-?off"
        ),
        re.I,
    ),
    # Clinical words that share a stem (meta-analysis, claudication, PPOS, phimosis, gemelli,
    # philanthropic) are kept out by the whole-word boundaries.
    "vendor_or_model_name": re.compile(
        _whole_words(
            r"openai|chat-?gpt|gpt-?\d\w*|anthropic|claude|llama\d*|meta[\s-]ai|mi[sx]tral"
            r"|qwen\d*|deep-?seek|gemini|gemma\d*|phi-?\d\w*|hugging[\s-]?face|vllm"
            r"|sft|dpo|grpo|rlhf|ppo|lora|fine[\s-]?tuned\s+(?:language\s+)?model|reward\s+model"
        ),
        re.I,
    ),
    "reasoning_trace": _ANY_TRACE_TAG,
    "special_token": re.compile(_TOKEN, re.I),
    "error_string": re.compile(
        r"traceback\s+\(most\s+recent\s+call\s+last\)|cuda\s+out\s+of\s+memory"
        r"|outofmemoryerror|\[error\]|internal\s+server\s+error|rate[\s_]limit[\s_]exceeded"
        r"|context[\s_]length[\s_]exceeded|maximum\s+context\s+length"
        # Python exception names are CamelCase; lower-case "error:" is ordinary prose.
        r"|(?-i:(?<![^\W_])(?:[A-Z][A-Za-z]*)?(?:Error|Exception):)",
        re.I,
    ),
}


@dataclass(frozen=True)
class LeakFlag:
    kind: str
    excerpt: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "excerpt": self.excerpt}


@dataclass(frozen=True)
class ParsedDecision:
    decision: dict[str, Any]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text).translate(_INVISIBLE)


def _gap(match: re.Match[str]) -> str:
    """A removed token leaves a space only where it would otherwise glue two words together."""
    text, (start, end) = match.string, match.span()
    glued = start > 0 and end < len(text) and not text[start - 1].isspace()
    return " " if glued and not text[end].isspace() else ""


def _has_content(text: str) -> bool:
    return bool(_TOKEN_RUN.sub("", text).strip())


def _drop_reasoning(text: str) -> str:
    # One pass over the tags rather than a lazy regex per opening tag, which is quadratic when
    # a degenerate response repeats "<think>" thousands of times with no close.
    kept: list[str] = []
    position, opened = 0, None
    for tag in _ANY_TRACE_TAG.finditer(text):
        if "/" not in tag.group():
            opened = tag.start() if opened is None else opened
            continue
        if opened is None:
            # Some chat templates put the opening tag in the prompt, so only the close reaches
            # us: everything before it is reasoning.
            kept = []
        else:
            kept.append(text[position:opened])
            opened = None
        position = tag.end()
    kept.append(text[position:opened])  # an unclosed trace runs to the end
    return "".join(kept)


def _drop_template_tokens(text: str) -> str:
    for match in _ROLE_TOKEN.finditer(text):
        role = (match["header"] or match["role"] or "").lower()
        if role in _OTHER_TURN_ROLES and _has_content(text[: match.start()]):
            text = text[: match.start()]  # the model went on to write the next turn
            break
    return _TOKEN_RUN.sub(_gap, _ROLE_TOKEN.sub(_gap, text))


def _drop_turn_lines(text: str) -> str:
    text = _LEADING_ROLE.sub("", text)
    for match in _NEXT_TURN.finditer(text):
        if text[: match.start()].strip():
            return text[: match.start()]
    return text


def _tidy_whitespace(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def display_text(raw: str) -> str:
    """The response as raters see it: template, reasoning and whitespace artefacts removed."""
    text = raw
    for _ in range(_MAX_PASSES):
        cleaned = _normalise(text)
        cleaned = _drop_template_tokens(_drop_reasoning(cleaned))
        cleaned = _tidy_whitespace(_drop_turn_lines(cleaned))
        if cleaned == text:
            break
        text = cleaned
    return text


def _for_matching(text: str) -> str:
    # NFKC folds fullwidth and styled letters ("ＧＰＴ") for matching only; shown text keeps NFC
    # so that units such as m² survive.
    return unicodedata.normalize("NFKC", _normalise(text)).translate(_DASHES)


def _excerpt(text: str, start: int, end: int) -> str:
    room = max(0, EXCERPT_CHARS - (end - start)) // 2
    return " ".join(text[max(0, start - room) : end + room].split())[:EXCERPT_CHARS]


def _terms_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    cleaned = {_for_matching(str(term)).strip() for term in terms}
    kept = sorted((term for term in cleaned if len(term) >= 2), key=len, reverse=True)
    if not kept:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, term.split())) for term in kept)
    return re.compile(_whole_words(alternatives), re.I)


def leak_flags(
    text: str, *, arm_labels: Iterable[str] = (), extra_terms: Iterable[str] = ()
) -> list[LeakFlag]:
    """One flag per kind of arm-revealing content found, in LEAK_KINDS order; [] when clean.

    Works on raw and display text alike. Checkpoint or adapter names in extra_terms are reported
    as "arm_label" because they reveal the arm just as directly.
    """
    text = _for_matching(text)
    patterns = dict(_LEAK_PATTERNS)
    terms = _terms_pattern([*arm_labels, *extra_terms])
    if terms is not None:
        patterns["arm_label"] = terms
    flags = []
    for kind in LEAK_KINDS:
        if kind == "empty":
            if not text.strip():
                flags.append(LeakFlag(kind, ""))
            continue
        match = patterns[kind].search(text) if kind in patterns else None
        if match:
            flags.append(LeakFlag(kind, _excerpt(text, *match.span())))
    return flags


def _label_key(value: str) -> str:
    # Spacing, underscores, case, unicode dashes, a trailing period and quotes do not change
    # which label a rater or model meant.
    value = value.translate(_DASHES).replace("≤", "<=").strip().strip(".'\"").casefold()
    return re.sub(r"[\s_]+", "", value)


def _shown(value: str) -> str:
    value = " ".join(value.split())
    if len(value) <= _SHOWN_VALUE_CHARS:
        return value
    return value[: _SHOWN_VALUE_CHARS - 1] + "…"


def _last_values(text: str, names: Mapping[str, str]) -> dict[str, str]:
    """Layer key -> value on the last line naming that layer (the final answer wins)."""
    by_length = sorted(names, key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(map(re.escape, name.split())) for name in by_length)
    line_pattern = re.compile(
        rf"^[\s#>+•-]*(?:\d{{1,2}}[.)]\s+)?(?P<name>{alternatives})"
        r"(?:\s*:|\s+-+(?=\s|$))(?P<value>.*)$",
        re.I,
    )
    found: dict[str, str] = {}
    for line in text.translate(_DASHES).splitlines():
        match = line_pattern.match(line.replace("*", "").replace("`", ""))
        # Collapsed whitespace also keeps the label split below linear on long values.
        value = " ".join(match["value"].split()) if match else ""
        key = names.get(" ".join(match["name"].casefold().split())) if match else None
        if key is not None and value:
            found[key] = value
    return found


def parse_decision(text: str, layers: Mapping[str, Mapping[str, Any]]) -> ParsedDecision:
    """The decision in a response's closing ``<Title>: <value>`` lines; never raises."""
    text = text if isinstance(text, str) else ""
    titles = {key: str(config.get("title") or key) for key, config in layers.items()}
    names: dict[str, str] = {}
    for key, title in titles.items():
        for name in (key, key.replace("_", " "), title):
            names.setdefault(" ".join(name.translate(_DASHES).casefold().split()), key)
    values = _last_values(text, names) if names else {}

    decision: dict[str, Any] = {}
    problems: list[str] = []
    for key, config in layers.items():
        title = titles[key]
        if key not in values:
            problems.append(f"{title}: not found")
            continue
        labels = [str(label) for label in config.get("labels") or ()]
        canonical = {_label_key(label): label for label in labels}
        value = values[key]
        if _label_key(value) in canonical or not config.get("multi"):
            parts = [value]
        else:
            parts = [p for p in re.split(r" ?[;,] ?| and ", value, flags=re.I) if p.strip()]
        chosen: list[str] = []
        for part in parts:
            label = canonical.get(_label_key(part))
            if label is None:
                problems.append(f"{title}: '{_shown(part)}' is not one of: {', '.join(labels)}")
            elif label not in chosen:
                chosen.append(label)
        if chosen:
            decision[key] = chosen if config.get("multi") else chosen[0]
    return ParsedDecision(decision, problems)
