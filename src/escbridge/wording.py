"""Words shared by the CLI, the sandbox demo, reports and the store: counts, install hints (no
dependencies, so the core and the sandbox can use it without importing the command line)."""

from __future__ import annotations

import shlex

__all__ = ["pip_install", "plural"]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 team``, ``2 teams``, ``0 rules``; ``many`` for words without a plain "s" plural."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def pip_install(*requirements: str, checkout: bool = True) -> str:
    """How to install ``requirements`` (``escbridge[charts]``, ``escbridge-zendesk``), said as
    for a package index, since that is how a user's escbridge came; ``checkout`` adds the way
    from a source tree, whose wheels ``make dist`` builds (escbridge is not on an index yet).

    >>> pip_install("escbridge[charts]", checkout=False)
    "pip install 'escbridge[charts]'"
    """
    named = " ".join(shlex.quote(requirement) for requirement in requirements)
    if not checkout:
        return f"pip install {named}"
    return (
        f"pip install {named} "
        f"(from a checkout: make dist, then pip install --find-links dist/ {named})"
    )
