"""`escbridge worker`: process the inbox until SIGTERM/SIGINT (or, with --drain, until empty)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    add_log_options,
    configure_logging,
    failed,
    install_secrets,
    run_until_signal,
)
from escbridge.errors import EscbridgeError
from escbridge.wording import plural

if TYPE_CHECKING:
    pass

log = logging.getLogger("escbridge.cli")


def configure_worker_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Process the inbox: claim received events, decide, apply and record escalations. "
        "Run several (on one machine or many, sharing a PostgreSQL store) to share the work."
    )
    parser.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml to use")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="worker threads in this process (default: processing.concurrency, else 1)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="stop when no event is pending or in progress instead of waiting for more",
    )
    add_log_options(parser)


def run_worker(args: argparse.Namespace) -> int:
    """`escbridge worker`: runs until SIGTERM/SIGINT, finishing the events in hand."""
    from escbridge.config import load_config
    from escbridge.processing import build_processor
    from escbridge.secrets import safe_url

    if args.concurrency is not None and args.concurrency < 1:
        print("escbridge worker: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    configure_logging(args)
    try:
        config = load_config(args.config)
        install_secrets(config.secret_values)
        processor = build_processor(config, notify_environment=True)
        install_secrets(processor.secrets)  # the matrix's notify targets' too
        processor.store.check_schema()
    except EscbridgeError as error:  # InvalidInputError: 2, anything else: 1
        return failed("worker", error)
    concurrency = args.concurrency or processor.settings.concurrency
    log.info(
        "worker %s: %s on store %s",
        processor.worker_id,
        plural(concurrency, "thread"),
        safe_url(processor.store.url),
    )
    try:
        with run_until_signal("finishing the events in hand") as stop:
            report = processor.run(stop=stop, concurrency=concurrency, drain=args.drain)
    finally:
        processor.store.close()
    print(
        f"processed {plural(report.done, 'event')}: {_counts(report.outcomes)}; "
        f"{report.retried} retried, {report.dead} dead-lettered"
    )
    return EXIT_OK


def _counts(outcomes: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items())) or "none"
