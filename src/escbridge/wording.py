"""Words for counts, shared by the CLI, the sandbox demo and reports (no dependencies, so the
core and the sandbox can use it without importing the command line)."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 team``, ``2 teams``, ``0 rules``; ``many`` for words without a plain "s" plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"
