"""`escbridge notify test TARGET`: send a sample escalation to one of the matrix's targets now.

The message is rendered exactly as the outbox renders a real one (the target's template, or the
default) from a made-up escalation, and sent through the same sender — but not through the
outbox: nothing is stored, nothing retried. What was sent where is printed with every secret
masked. Exit codes: 0 sent, 1 not sent (the reason printed), 2 invalid input.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, failed, invalid
from escbridge.errors import EscbridgeError, InvalidInputError

__all__ = ["configure_notify_parser", "run_notify"]

#: Each outcome as the operator reads it (the outbox would retry a temporary failure).
_SAID = {
    "sent": "sent",
    "retry": "not sent, a temporary failure (the outbox would retry it)",
    "failed": "not sent",
    "unknown": "outcome unknown",
}


def configure_notify_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Notification targets (the matrix's notify: section). `escbridge notify test TARGET` "
        "sends a sample escalation to one now, to check its settings and secrets."
    )
    commands = parser.add_subparsers(dest="notify_command", metavar="COMMAND", required=True)
    test = commands.add_parser(
        "test",
        help="send a sample escalation to TARGET now (not through the outbox)",
        description="Render a sample escalation for TARGET and send it now; print what was "
        "sent where (secrets masked). Exit 0 when the service took it, 1 when not.",
    )
    test.add_argument("target", metavar="TARGET", help="a target id under notify: targets:")
    test.add_argument(
        "--matrix", help="matrix file (default: the one escbridge.yaml names, else matrix.yaml)"
    )
    test.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml naming the matrix")


def _matrix_path(args: argparse.Namespace) -> Path:
    if args.matrix:
        return Path(args.matrix)
    if not Path(args.config).exists() and args.config == "escbridge.yaml":
        return Path("matrix.yaml")
    from escbridge.config import load_config

    return load_config(args.config, helpdesk_secrets=False).matrix_path


def run_notify(args: argparse.Namespace) -> int:
    from escbridge.matrix import load_matrix
    from escbridge.notify.context import sample_context
    from escbridge.notify.deliver import send_message
    from escbridge.notify.messages import HttpMessage, render
    from escbridge.notify.model import NotifySetupError, resolve
    from escbridge.secrets import Redactor

    out = sys.stdout
    try:
        matrix = load_matrix(_matrix_path(args))
    except InvalidInputError as error:
        return invalid(error)
    except EscbridgeError as error:
        return failed("notify test", error)
    target = matrix.notify.get(args.target)
    if target is None:
        known = sorted(matrix.notify)
        close = get_close_matches(args.target, known, n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(known) if known else "none: the matrix has no notify: targets"
        print(
            f"escbridge notify test: no target {args.target!r} in {matrix.source}{hint} "
            f"(targets: {listed})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        resolved = resolve(target, os.environ)
    except NotifySetupError as error:
        return failed("notify test", error)
    mask = Redactor(resolved.secret_values())
    now = datetime.now(UTC)
    # A fresh id on each test: a receiver deduping on X-Escbridge-Delivery must not drop it.
    delivery_id = int(now.timestamp() * 1000)
    contexts = [sample_context(id=delivery_id, matrix=matrix.name)]
    message = render(resolved, contexts)
    what = message.summary
    if isinstance(message, HttpMessage):
        print(f"{args.target} ({target.kind}): {mask(what)}", file=out)
    else:
        to = ", ".join(getattr(resolved.settings, "to", ()))
        print(f"{args.target} (email to {to}): {mask(message.subject)}", file=out)
    if message.warning:
        print(f"warning: {mask(message.warning)}", file=out)
    delivery = send_message(resolved, contexts, delivery_id, now)
    print(f"{_SAID[delivery.outcome]}: {mask(delivery.detail)}", file=out)
    if delivery.outcome == "sent":
        return EXIT_OK
    if delivery.outcome == "unknown":
        print("the answer was lost: check the channel or mailbox for the sample", file=out)
    return EXIT_PROBLEM
