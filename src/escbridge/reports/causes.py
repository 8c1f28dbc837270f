"""Which of a rule's conditions made a ticket go up, and which only say what the rule applies to.

A rule such as ``status: [new, open]`` and ``idle: {over: 2h}`` fires on tickets that are open
*and* idle: the status is true of every ticket it could fire on, the idle time is why this one
went up. The report ranks the *triggers* and lists the *scope* per rule ("applied to").

Each leaf condition has a strength:

0. time measures, keywords, text (subject, description, latest comment; ``contains``/``regex``),
   counts and limits (reopens, a custom field above 500): what happened to the ticket;
1. what the ticket is: tags, priority, requester, organization, a custom field's value;
2. where it is in the workflow: status, channel, group, assignee, level, instance.

A leaf is *scope* when a condition it is and-ed with holds a stronger leaf; otherwise it fired
the rule: a ``trigger`` (strength 0), or an ``attribute`` that fired a rule with no stronger
condition (``tags: [policy_exception]`` alone; with only status and tags, the tags).

Pure: the report's stored reasons (``explain`` lines) are mapped back to a rule's leaves by the
words ``explain`` starts each leaf's line with; when that is ambiguous, nothing is claimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from escbridge.conditions.ast import (
    TEXT_FIELDS,
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    Leaf,
    NotOf,
    TagTest,
)

Role = Literal["trigger", "attribute", "scope"]

_WEAKEST = 3  # stronger than no leaf at all
_IDENTITY = ("priority", "requester.", "organization.")
_LIMITS = frozenset({"gt", "gte", "lt", "lte", "contains", "regex"})


def strength(leaf: Leaf) -> int:
    """0 for what happened to the ticket, 1 for what it is, 2 for where it is (see above)."""
    if not isinstance(leaf, FieldTest):
        return 1 if isinstance(leaf, TagTest) else 0
    name = leaf.field
    if name in TEXT_FIELDS or name == "reopen_count":
        return 0
    if name.startswith("custom_fields."):
        return 0 if leaf.op in _LIMITS else 1
    return 1 if name.startswith(_IDENTITY) else 2


def _strongest(cond: Condition) -> int:
    if isinstance(cond, AllOf | AnyOf):
        return min((_strongest(c) for c in cond.items), default=_WEAKEST)
    if isinstance(cond, NotOf):
        return _strongest(cond.item)
    return strength(cond)


@dataclass(frozen=True)
class RuleLeaf:
    """One leaf of a rule's condition: under an odd number of ``not``s or not, and its role."""

    condition: Leaf
    negated: bool
    role: Role


def rule_leaves(cond: Condition) -> tuple[RuleLeaf, ...]:
    """Every leaf of a rule's condition with its role (depth first)."""
    return tuple(_leaves(cond, negated=False, beside=_WEAKEST))


def _leaves(cond: Condition, *, negated: bool, beside: int) -> Iterator[RuleLeaf]:
    """``beside``: the strongest leaf among the conditions this one is and-ed with."""
    if isinstance(cond, AllOf):
        strengths = [_strongest(c) for c in cond.items]
        for i, item in enumerate(cond.items):
            others = min((s for j, s in enumerate(strengths) if j != i), default=_WEAKEST)
            yield from _leaves(item, negated=negated, beside=min(beside, others))
    elif isinstance(cond, AnyOf):
        for item in cond.items:
            yield from _leaves(item, negated=negated, beside=beside)
    elif isinstance(cond, NotOf):
        yield from _leaves(cond.item, negated=not negated, beside=beside)
    else:
        own = strength(cond)
        role: Role = "scope" if beside < own else "trigger" if own == 0 else "attribute"
        yield RuleLeaf(cond, negated, role)


def _says(leaf: Leaf, text: str) -> bool:
    """Whether ``text`` is a line ``explain`` writes for ``leaf`` (held or not: under a
    ``not`` the leaf's line is the one for a leaf that did not hold)."""
    if isinstance(leaf, FieldTest):
        return text.startswith(f"{leaf.field} ")
    if isinstance(leaf, TagTest):
        return text.startswith("tags [")
    if isinstance(leaf, KeywordTest):
        phrases = [f'"{" ".join(p)}"' for p in leaf.phrases]
        return any(text.startswith(f"{p} appears in the ") for p in phrases) or bool(
            phrases and text.startswith(f"none of {phrases[0]}")
        )
    label = TIME_MEASURES[leaf.measure]
    return text.startswith((f"{label} is ", f"{label}: "))


def role_of(leaves: tuple[RuleLeaf, ...], reason: str) -> Role | None:
    """The role of the leaf a stored reason of this rule was written for; None when no leaf,
    or leaves of different roles, could have written it (the report then claims nothing)."""
    text = " ".join(reason.split())
    negated = False
    while text.startswith("not: "):
        text, negated = text[5:], not negated
    roles = {x.role for x in leaves if x.negated == negated and _says(x.condition, text)}
    return roles.pop() if len(roles) == 1 else None
