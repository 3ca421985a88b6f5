from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses, with a message meant for the person who made it."""


class JudgmentInvalid(DomainError):
    """A judgment that does not fit the study's rubric; ``errors`` maps a field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class StaleJudgment(DomainError):
    """The item was rated (or edited) since this form was shown; nothing was changed."""
