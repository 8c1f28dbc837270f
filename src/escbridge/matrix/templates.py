"""Note and customer-update templates: compiled in a sandbox and trial-rendered at load time, so
a template that cannot work is a matrix error, not a failed escalation at 3 a.m.

``check_template`` is the same check for any set of variables: the notification templates of
``escbridge.notify`` use it, with an HTML-escaping sandbox for e-mail bodies.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_VARIABLES = frozenset({"ticket", "rule", "destination", "from_level", "reasons", "now"})

DEFAULT_NOTE = """\
escbridge escalated this ticket to {{ destination.name }}\
{% if destination.group %} ({{ destination.group }}){% endif %}.
Rule: {{ rule.name }} [{{ rule.id }}]
Why:
{% for reason in reasons %}- {{ reason }}
{% endfor %}"""

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)
#: The same sandbox escaping every value it prints for HTML (e-mail bodies): a ticket subject
#: holding ``<script>`` arrives as text.
_HTML_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=False
)


def default_note() -> jinja2.Template:
    """The note escbridge writes when a rule has none of its own."""
    return _ENV.from_string(DEFAULT_NOTE)


class _AnyFields(dict[str, Any]):
    """Custom fields in the load-time trial render: every name exists (tenants define their own)."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _sample_context() -> dict[str, Any]:
    when = datetime(2026, 1, 5, 9, 0)
    ticket = {
        "id": "12345",
        "instance": "support",
        "subject": "Sample subject",
        "description": "Sample description",
        "latest_comment": "Sample comment",
        "requester": {"id": "1", "name": "Sam Customer", "email": "sam@example.com"},
        "organization": {"id": "2", "name": "Example Ltd", "email": None},
        "tags": ["vip"],
        "custom_fields": _AnyFields(),
        "channel": "email",
        "status": "open",
        "priority": "normal",
        "group": "Support",
        "assignee": "Alex Agent",
        "created_at": when,
        "updated_at": when,
        "first_response_at": None,
        "last_customer_reply_at": when,
        "due_at": when,
        "reopen_count": 0,
        "level": "l1",
        "version": None,
    }
    return {
        "ticket": ticket,
        "rule": {"id": "rule", "name": "Rule", "kind": "hierarchical"},
        "destination": {"id": "l2", "name": "Level 2", "kind": "level", "group": "Tier 2"},
        "from_level": {"id": "l1", "name": "Level 1", "kind": "level", "group": "Tier 1"},
        "reasons": ["a reason"],
        "now": when,
    }


def compile_template(text: str) -> jinja2.Template:
    """Compile and trial-render a note template; ValueError says what is wrong with it."""
    return check_template(text, TEMPLATE_VARIABLES, _sample_context())


def check_template(
    text: str,
    variables: Collection[str],
    sample: Mapping[str, Any],
    *,
    html: bool = False,
) -> jinja2.Template:
    """Compile ``text`` in the sandbox (``html``: escaping every value) and trial-render it with
    ``sample``; ValueError says what is wrong: syntax, a variable not in ``variables``, an
    attribute the sample does not have, or something the sandbox forbids."""
    env = _HTML_ENV if html else _ENV
    try:
        ast = env.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: {exc.message}") from None
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - set(variables))
    if unknown:
        known = ", ".join(sorted(variables))
        raise ValueError(f"template uses unknown variable {', '.join(unknown)} (known: {known})")
    template = env.from_string(text)
    try:
        template.render(sample)
    except jinja2.exceptions.SecurityError as exc:
        raise ValueError(f"template does something unsafe: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise ValueError(f"template refers to something that does not exist: {exc}") from None
    except Exception as exc:  # any other render failure is still the admin's template
        raise ValueError(f"template fails to render: {exc}") from None
    return template
