"""The condition language of a rule's ``when:``: one tree (``ast``) and the modules that walk it.

``parse`` builds the tree from YAML, ``evaluate`` tests it (closures and one generated matcher
per matrix), ``explain`` says why it held for a ticket, ``describe`` says what it asks in words.
Only the tree is imported here: the matrix model depends on it, and the walkers depend on the
matrix model's types, so importing them here would make a cycle.
"""

from escbridge.conditions.ast import (
    FIELD_NAMES,
    FIELD_OPS,
    FIELD_OPS_ALL,
    LEVEL_MEASURES,
    LEVEL_RELATIVE,
    PRIORITY_OPS,
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
    TimeTest,
    children,
    is_level_relative,
    walk,
)

__all__ = [
    "FIELD_NAMES",
    "FIELD_OPS",
    "FIELD_OPS_ALL",
    "LEVEL_MEASURES",
    "LEVEL_RELATIVE",
    "PRIORITY_OPS",
    "TEXT_FIELDS",
    "TIME_MEASURES",
    "AllOf",
    "AnyOf",
    "Condition",
    "FieldTest",
    "KeywordTest",
    "Leaf",
    "NotOf",
    "TagTest",
    "TimeTest",
    "children",
    "is_level_relative",
    "walk",
]
