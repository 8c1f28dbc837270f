"""The escalation matrix an admin writes in YAML: schema (``spec``), the compiled model with its
one destination rule (``model``, ``Matrix.resolve``), loading with file:line errors (``loader``)
and note templates (``templates``). The condition language lives in ``escbridge.conditions``;
its tree is re-exported here because rules carry it.
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
    NotOf,
    TagTest,
    TimeTest,
    is_level_relative,
)
from escbridge.matrix.loader import load_matrix, parse_matrix
from escbridge.matrix.model import (
    Matrix,
    Rule,
    RuleActions,
    Rung,
    Target,
    describe_expected,
    describe_target,
)
from escbridge.matrix.spec import (
    ID_PATTERN,
    ActionsSpec,
    CalendarSpec,
    DefaultsSpec,
    Duration,
    HolidaysSpec,
    LevelSpec,
    LimitsSpec,
    MatrixSpec,
    PriorityName,
    RuleSpec,
    TeamSpec,
    TimeMode,
)
from escbridge.matrix.templates import DEFAULT_NOTE, TEMPLATE_VARIABLES, compile_template
from escbridge.model import LevelMarker

#: Kept for callers written before ``escbridge.model.LevelMarker``; use ``LevelMarker`` instead.
MARKER_PREFIX = LevelMarker.PREFIX

__all__ = [
    "DEFAULT_NOTE",
    "FIELD_NAMES",
    "FIELD_OPS",
    "FIELD_OPS_ALL",
    "ID_PATTERN",
    "LEVEL_MEASURES",
    "LEVEL_RELATIVE",
    "MARKER_PREFIX",
    "PRIORITY_OPS",
    "TEMPLATE_VARIABLES",
    "TEXT_FIELDS",
    "TIME_MEASURES",
    "ActionsSpec",
    "AllOf",
    "AnyOf",
    "CalendarSpec",
    "Condition",
    "DefaultsSpec",
    "Duration",
    "FieldTest",
    "HolidaysSpec",
    "KeywordTest",
    "LevelSpec",
    "LimitsSpec",
    "Matrix",
    "MatrixSpec",
    "NotOf",
    "PriorityName",
    "Rule",
    "RuleActions",
    "RuleSpec",
    "Rung",
    "TagTest",
    "Target",
    "TeamSpec",
    "TimeMode",
    "TimeTest",
    "compile_template",
    "describe_expected",
    "describe_target",
    "is_level_relative",
    "load_matrix",
    "parse_matrix",
]
