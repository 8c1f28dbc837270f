"""Telling people about escalations: Slack, Microsoft Teams, e-mail and signed webhooks.

``spec`` is the matrix's ``notify:`` section as written; ``model`` compiles it into targets and
resolves their ``${VAR}`` secrets at send time; ``context`` is what a notification says about
one escalation (stored with it in the outbox); ``messages`` renders a target's message from one
context or several (a digest); ``schedule`` says when a notification may go (quiet hours,
digest windows); ``send`` and ``deliver`` carry messages out, exactly once in effect.

The modules are imported by name (``from escbridge.notify.model import NotifyTarget``): the
matrix package imports ``spec`` while it loads, so this package imports nothing eagerly.
"""
