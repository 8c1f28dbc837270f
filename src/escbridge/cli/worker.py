"""`escbridge worker`: process the inbox until SIGTERM/SIGINT (or, with --drain, until empty)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, run_until_signal
from escbridge.errors import EscbridgeError, InvalidInputError

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


def run_worker(args: argparse.Namespace) -> int:
    """`escbridge worker`: runs until SIGTERM/SIGINT, finishing the events in hand."""
    from escbridge.config import load_config
    from escbridge.processing import build_processor

    if args.concurrency is not None and args.concurrency < 1:
        print("escbridge worker: --concurrency must be at least 1")
        return EXIT_INVALID
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        processor = build_processor(load_config(args.config))
        processor.store.check_schema()
    except InvalidInputError as error:
        print(f"escbridge worker: {error}")
        return EXIT_INVALID
    except EscbridgeError as error:
        print(f"escbridge worker: {error}")
        return EXIT_PROBLEM
    concurrency = args.concurrency or processor.settings.concurrency
    log.info("worker %s: %d thread(s) on %r", processor.worker_id, concurrency, processor.store)
    try:
        with run_until_signal("finishing the events in hand") as stop:
            report = processor.run(stop=stop, concurrency=concurrency, drain=args.drain)
    finally:
        processor.store.close()
    print(
        f"processed {report.done} event(s): {_counts(report.outcomes)}; "
        f"{report.retried} retried, {report.dead} dead-lettered"
    )
    return EXIT_OK


def _counts(outcomes: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items())) or "none"
