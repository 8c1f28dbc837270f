"""Zendesk sync under a tight Update Ticket limit: escalate 1,000 of 10,000 tickets.

The Zendesk sandbox runs as a real HTTP server on 127.0.0.1 with the Update Ticket limit set to
100 updates a minute (each ticket of an update_many job costs one update) and incremental export
at 10 requests a minute. The connector syncs everything through the incremental export, and
every 10th ticket (tagged ``sla_breach``) is escalated to L2 — group, priority, private note,
level tag — through ``apply_many``, page by page, as ``escbridge sync`` would.

Printed: API calls made, 429s received, wall time, and the lower bound the limit allows: with
a sliding one-minute window, 100 updates can go at once and each further 100 one minute later,
so 1,000 updates need at least (ceil(1000 / 100) - 1) minutes = 9 minutes.
Targets: no call fails, wall time <= 1.1 x the bound, fewer calls than one per ticket.

Run: .venv/bin/python benchmarks/zendesk_sync.py [--minute-seconds 60] [--tickets 10000]
     (--minute-seconds 6 runs the same scenario ten times faster, with a 6-second "minute")
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import UTC, datetime, timedelta

from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from escbridge_zendesk.sandbox import ZendeskSandbox

from escbridge.model import Actions, Priority
from escbridge.sandbox import quiet_werkzeug, serve

L2 = Actions(
    group="Tier 2",
    priority=Priority.HIGH,
    note="Escalated to L2: the first-response target was missed.",
    tags_add=("escbridge_l2",),
    level="l2",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=10, help="escalate one ticket in N")
    parser.add_argument("--updates-per-minute", type=int, default=100)
    parser.add_argument("--minute-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    quiet_werkzeug()
    logging.basicConfig(level=logging.WARNING)

    minute = args.minute_seconds
    sandbox = ZendeskSandbox(
        update_limit=args.updates_per_minute,
        window_seconds=minute,
        incremental_limit=10,
        account_limit=700,
    )
    start = datetime.now(UTC) - timedelta(days=1)
    sandbox.seed(
        args.tickets,
        lambda i: {
            "subject": f"ticket {i}",
            "status": "open",
            "priority": "normal",
            "group": "Support",
            "tags": ["sla_breach"] if i % args.every == 0 else [],
            "at": start + timedelta(seconds=i),
        },
    )
    to_escalate = sum(1 for i in range(args.tickets) if i % args.every == 0)
    limit = args.updates_per_minute
    bound = (math.ceil(to_escalate / limit) - 1) * minute

    with serve(sandbox.app) as server:
        config = ZendeskConfig(
            base_url=server.url,
            sandbox=True,
            email="escbridge@sandbox.example",
            api_token="sandbox-admin-token",
        )
        connector = ZendeskConnector(config, instance="bench")
        began = time.monotonic()
        failed = escalated = seen = pages = 0
        for page in connector.iter_tickets(None, None):
            pages += 1
            seen += len(page.tickets)
            due = [(t, L2) for t in page.tickets if "sla_breach" in t.tags and t.level is None]
            if due:
                results = connector.apply_many(due)
                escalated += sum(r.ok and not r.skipped for r in results)
                failed += sum(not r.ok for r in results)
        wall = time.monotonic() - began
    sandbox.webhooks.close()

    stats = connector.api.client.stats
    on_ticket = sum("escbridge_l2" in t["tags"] for t in sandbox.tickets.values())
    print(f"tickets synced            {seen:>8} (in {pages} export pages)")
    print(
        f"tickets escalated         {escalated:>8} of {to_escalate} (on the helpdesk: {on_ticket})"
    )
    print(f"failed escalations        {failed:>8}")
    print(f"API calls made            {stats.calls:>8}")
    print(f"429s received             {stats.throttled:>8}")
    print(f"paced (waited) seconds    {stats.paced_seconds:>8.1f}")
    print(f"wall time                 {wall:>8.1f} s")
    print(
        f"lower bound               {bound:>8.1f} s "
        f"({to_escalate} updates at {limit} per {minute:g} s window)"
    )
    ratio = wall / bound if bound else float("inf")
    print(f"wall time / bound         {ratio:>8.3f}")
    checks = {
        "no call failed": failed == 0 and on_ticket == to_escalate,
        "at most 1.1x the bound": wall <= 1.1 * bound,
        "fewer calls than tickets escalated": stats.calls < to_escalate,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
