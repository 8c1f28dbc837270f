"""Delivery: the outbox's rows become messages, each delivered exactly once in effect.

The rows were written in the transaction that recorded their escalation (a recorded
escalation always has them, a rolled-back one none). A :class:`Notifier`, called from every
worker loop, claims one message at a time — one row, or every due row of a digest target — and
commits it as ``sending`` (its attempt counted) before it goes out. Then:

- sent → ``sent``; not taken (refused, 429, 503) → ``pending`` again after a backoff, and
  ``failed`` (the dead letter, replayable) after ``max_attempts``; refused for good (4xx,
  SMTP 5xx, bad credentials) → ``failed`` at once, the reason named;
- outcome unknown (the answer lost, or a row found ``sending`` after its lease: the worker
  died mid-send) → by target kind, the rules of helpdesk writes: a signed webhook is sent
  again with the same ``X-Escbridge-Delivery`` id (receivers dedupe on it); a Slack bot
  message is looked for in the channel (its metadata carries the id) and sent only when
  missing; a Slack incoming webhook, Teams and e-mail are marked ``unknown`` — never sent
  again blindly; `escbridge jobs` shows them and ``--replay-notification ID`` sends one again.

Quiet hours and digest windows were applied to ``not_before`` at insert; quiet hours are
checked again at claim (the matrix may have changed since). Time is the ``now`` passed in, moved
on by what the pass takes (a claim's lease counts from the claim: see ``Notifier._timer``);
a claim is held at least as long as its send can take (``Notifier.lease_for``).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from escbridge.notify import send as senders
from escbridge.secrets import Redactor
from escbridge.store import (
    NOTIFY_FAILED,
    NOTIFY_PENDING,
    NOTIFY_SENT,
    NOTIFY_UNKNOWN,
    NewNotification,
    NotificationClaim,
    Store,
    StoredEscalation,
    TicketWrites,
)

if TYPE_CHECKING:
    from escbridge.matrix.model import Matrix
    from escbridge.model import Decision, Ticket
    from escbridge.notify.model import NotifyTarget

log = logging.getLogger("escbridge.notify")

#: The longest a service's ``Retry-After`` is obeyed: a notification held back for a day is of
#: no use, so a longer ask waits this long and counts as an attempt (then, after
#: ``max_attempts``, the notification is ``failed`` and listed).
MAX_RETRY_AFTER = timedelta(hours=1)

#: Added to the longest a send can take, for the claim's lease (commit, render, clock skew).
LEASE_MARGIN = timedelta(seconds=30)

#: What a person does about an ``unknown`` notification (shown by `escbridge jobs`).
UNKNOWN_HINT = (
    "check the channel or mailbox; `escbridge jobs --replay-notification {id}` sends it again"
)


#: A look that never comes (a notifier without targets, once it has looked).
NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass
class NotifyReport:
    """What one delivery pass did (messages, not rows: a digest is one)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    postponed: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return self.sent + self.retried + self.failed + self.unknown


def outbox_rows(
    matrix: Matrix,
    decision: Decision,
    ticket: Ticket,
    escalation: StoredEscalation,
    now: datetime,
    windows: Mapping[str, datetime],
    *,
    agent_url: str | None,
) -> list[NewNotification]:
    """The outbox rows one recorded escalation makes: one per target of its destination, due
    at the end of the target's digest window (``windows``: open ones) or quiet hours."""
    from escbridge.notify.context import notification_context, targets_for
    from escbridge.notify.schedule import not_before

    targets = [t for t in targets_for(matrix, decision) if t in matrix.notify]
    if not targets:
        return []
    context = notification_context(
        decision, ticket, matrix, helpdesk=escalation.helpdesk, agent_url=agent_url
    )
    return [
        NewNotification(
            instance=escalation.instance,
            ticket_id=escalation.ticket_id,
            escalation_id=escalation.id,
            target=target_id,
            context=context,
            not_before=not_before(matrix.notify[target_id], now, windows.get(target_id)),
        )
        for target_id in targets
    ]


class Outbox:
    """What the Recorder needs to write an escalation's notifications in its transaction:
    the matrix's targets and each instance's agent-view link. ``on_written``: told the
    earliest time a new row may go out (the worker's notifier looks then)."""

    def __init__(
        self,
        matrix: Matrix,
        agent_url: Callable[[str, str], str | None] = lambda instance, ticket_id: None,
        on_written: Callable[[datetime], None] | None = None,
    ) -> None:
        self.matrix = matrix
        self.agent_url = agent_url
        self.on_written = on_written

    def write(
        self,
        batch: TicketWrites,
        recorded: Sequence[tuple[Decision, Ticket, StoredEscalation]],
        now: datetime,
    ) -> list[NewNotification]:
        """Add the notifications of ``recorded`` escalations to ``batch``'s transaction."""
        if not self.matrix.notify or not recorded:
            return []
        from escbridge.notify.context import targets_for

        wanted = {t for decision, _, _ in recorded for t in targets_for(self.matrix, decision)}
        if not wanted:
            return []
        windows = batch.notify_windows(wanted, now)
        rows: list[NewNotification] = []
        for decision, ticket, escalation in recorded:
            try:
                new = outbox_rows(
                    self.matrix,
                    decision,
                    ticket,
                    escalation,
                    now,
                    windows,
                    agent_url=self.agent_url(escalation.instance, escalation.ticket_id),
                )
            except Exception:  # a bug here must not undo the record of a write that landed
                log.exception(
                    "%s/%s: the notifications of escalation %s could not be written",
                    escalation.instance,
                    escalation.ticket_id,
                    escalation.id,
                )
                continue
            for row in new:  # the next row of a digest target joins the window just opened
                windows.setdefault(row.target, now)
            rows.extend(new)
        batch.add_notifications(rows, now)
        return rows

    def written(self, rows: Sequence[NewNotification]) -> None:
        """After the commit: tell the notifier when the first of ``rows`` may go out."""
        if rows and self.on_written is not None:
            self.on_written(min(row.not_before for row in rows))


class Notifier:
    """Delivers the outbox. Thread-safe: worker threads of one process may share it (each claim
    is its own; the store makes two claims of one row impossible)."""

    def __init__(
        self,
        store: Store,
        targets: Mapping[str, NotifyTarget],
        *,
        environ: Mapping[str, str] | None = None,
        lease: timedelta = timedelta(minutes=2),
        max_attempts: int = 8,
        backoff: Callable[[int], float] | None = None,
        redactor: Redactor | None = None,
        session: requests.Session | None = None,
        ssl_context: ssl.SSLContext | None = None,
        per_target: int = 20,
        poll: timedelta = timedelta(seconds=5),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.targets = dict(targets)
        self.environ = os.environ if environ is None else environ
        self.lease = lease
        self.max_attempts = max_attempts
        if backoff is None:  # the inbox's rule, from a notification's first retry delay
            from escbridge.processing.settings import ProcessingConfig
            from escbridge.processing.worker import NOTIFY_FIRST_RETRY, backoff_delay

            rng, defaults = random.Random(), ProcessingConfig(backoff_seconds=NOTIFY_FIRST_RETRY)
            backoff = lambda attempt: backoff_delay(attempt, defaults, rng)  # noqa: E731
        self.backoff = backoff
        self.redactor = redactor or Redactor()
        self.session = session
        self.ssl_context = ssl_context
        self.per_target = per_target
        self.poll = poll
        self.clock = clock
        self._look_lock = threading.Lock()
        self._next_look: datetime | None = None  # None: look at the next chance

    # --- when to look ---------------------------------------------------------------------

    def hint(self, at: datetime) -> None:
        """A notification may be due at ``at`` (a record just wrote one): look then."""
        with self._look_lock:
            if self._next_look is None or at < self._next_look:
                self._next_look = at

    @property
    def next_look(self) -> datetime | None:
        """When :meth:`maybe_run` looks next (None: at its next call)."""
        with self._look_lock:
            return self._next_look

    def maybe_run(self, worker_id: str, now: datetime) -> NotifyReport | None:
        """:meth:`run_once` when something may be due: at a hinted time, and at least every
        ``poll`` (another process may have written rows). None when it was not time."""
        with self._look_lock:
            if self._next_look is not None and now < self._next_look:
                return None
            # Without targets nothing of this matrix writes rows: one look settles what an
            # earlier matrix left, then none (an idle worker sleeps until its deadlines).
            self._next_look = now + self.poll if self.targets else NEVER
        report = self.run_once(worker_id, now)
        if report.messages:
            self.hint(now)  # more may be due at once
        else:
            earliest = self.store.earliest_notification()
            if earliest is not None:
                self.hint(max(earliest, now))
        return report

    def secret_values(self) -> list[str]:
        """The secrets of every target whose environment is complete, for the log's mask."""
        from escbridge.notify.model import NotifySetupError, resolve

        found: list[str] = []
        for target in self.targets.values():
            try:
                found.extend(resolve(target, self.environ).secret_values())
            except NotifySetupError:
                continue  # said at worker start (environment_problems) and at each send
        return found

    # --- one pass -------------------------------------------------------------------------

    def lease_for(self, target: NotifyTarget) -> timedelta:
        """How long a claim of ``target`` is held: the configured lease, but never less than
        the longest its send can take (every step at its timeout) — a claim that ran out
        while its send was still under way would be taken over and sent a second time."""
        return max(self.lease, longest_send(target) + LEASE_MARGIN)

    def _timer(self, now: datetime) -> Callable[[], datetime]:
        """The time as a pass goes on: sends take time, and a claim's lease, a retry's backoff
        and a ``sent_at`` are counted from when they happen, not from the pass's start. With
        a ``clock`` (tests, workers): its time (never before ``now``); else ``now`` plus the
        time elapsed since."""
        clock = self.clock
        if clock is not None:
            return lambda: max(now, clock())
        started = time.monotonic()
        return lambda: now + timedelta(seconds=time.monotonic() - started)

    def run_once(self, worker_id: str, now: datetime) -> NotifyReport:
        """Deliver what is due at ``now``: every target, up to ``per_target`` messages each."""
        from escbridge.notify.schedule import next_allowed

        report = NotifyReport()
        at = self._timer(now)
        for target_id in self.store.notification_targets_due(now):
            target = self.targets.get(target_id)
            if target is None:
                self._orphans(target_id, worker_id, at, report)
                continue
            current = at()
            allowed = next_allowed(target, current)
            if allowed > current:
                report.postponed += self.store.postpone_notifications(target_id, current, allowed)
                continue
            lease = self.lease_for(target)
            for _ in range(self.per_target):
                held = self.store.claim_notifications(
                    target_id, worker_id, at(), lease, digest=target.digest is not None
                )
                if held is None:
                    break
                self._deliver(target, held, at, report)
        return report

    def _orphans(
        self, target_id: str, worker_id: str, at: Callable[[], datetime], report: NotifyReport
    ) -> None:
        """Rows of a target the matrix no longer has: failed, saying so (replayable once the
        target is back) — or ``unknown`` when a worker stopped while sending them (they may
        have gone out: a replay of every failed notification must not send them again)."""
        gone = f"target {target_id!r} is no longer in the matrix's notify: targets"
        while held := self.store.claim_notifications(
            target_id, worker_id, at(), self.lease, digest=True
        ):
            if held.stale:
                why = f"{gone}; the worker stopped while sending it: it may have gone out"
                self._settle(held, NOTIFY_UNKNOWN, at(), why, report)
            else:
                self._settle(held, NOTIFY_FAILED, at(), gone, report)

    def deliver(
        self, target: NotifyTarget, held: NotificationClaim, now: datetime, report: NotifyReport
    ) -> None:
        """Send one claimed message and settle its rows (see the module's rules)."""
        self._deliver(target, held, self._timer(now), report)

    def _deliver(
        self,
        target: NotifyTarget,
        held: NotificationClaim,
        at: Callable[[], datetime],
        report: NotifyReport,
    ) -> None:
        from escbridge.notify.model import NotifySetupError, SignedWebhook, SlackBot, resolve

        try:
            resolved = resolve(target, self.environ)
        except NotifySetupError as error:
            if held.stale:  # the first attempt may have gone out: not for a bulk replay
                why = f"{error}; the worker stopped while sending it: it may have gone out"
                self._settle(held, NOTIFY_UNKNOWN, at(), why, report)
            else:
                self._settle(held, NOTIFY_FAILED, at(), str(error), report)
            return
        self.redactor.add(resolved.secret_values())
        settings = resolved.settings
        if held.stale and not isinstance(settings, SignedWebhook | SlackBot):
            why = "the worker stopped while sending it: it may have gone out"
            self._settle(held, NOTIFY_UNKNOWN, at(), why, report)
            return
        if held.stale and isinstance(settings, SlackBot):
            # No attempt of these rows was made before they were due: a row held by quiet
            # hours or a digest window is looked for in the history since then, not since
            # its escalation (a busy channel's hours of messages may not fit the pages).
            since = min(row.not_before for row in held.rows)
            found = senders.find_slack_message(
                settings.token,
                settings.channel,
                held.delivery_id,
                since,
                session=self.session,
                api=settings.api_url,
            )
            if found:
                self._settle(held, NOTIFY_SENT, at(), None, report, "found in the channel")
                return
            if found is None:
                self._unanswered(
                    held, at(), "Slack could not be asked whether it was posted", report
                )
                return
        try:
            delivery = self.send(resolved, held, at())
        except Exception as error:  # a message that cannot be made (a bug, a template): say so
            log.exception("notification %s to %s: not sent", held.delivery_id, held.target)
            why = f"not sent: {type(error).__name__}: {error}"
            self._settle(held, NOTIFY_FAILED, at(), why, report)
            return
        if delivery.outcome == "sent":
            self._settle(held, NOTIFY_SENT, at(), None, report, delivery.detail)
        elif delivery.outcome == "failed":
            self._settle(held, NOTIFY_FAILED, at(), delivery.detail, report)
        elif delivery.outcome == "retry":
            self._retry(held, at(), delivery, report)
        elif isinstance(settings, SignedWebhook | SlackBot):
            self._unanswered(held, at(), delivery.detail, report)
        else:
            self._settle(held, NOTIFY_UNKNOWN, at(), delivery.detail, report)

    def send(
        self, target: NotifyTarget, held: NotificationClaim, now: datetime
    ) -> senders.Delivery:
        """Render the claim's message for a resolved ``target`` and send it (no store write)."""
        contexts = [{**row.context, "id": row.id} for row in held.rows]
        return send_message(
            target,
            contexts,
            held.delivery_id,
            now,
            session=self.session,
            ssl_context=self.ssl_context,
        )

    # --- settling -------------------------------------------------------------------------

    def _retry(
        self,
        held: NotificationClaim,
        now: datetime,
        delivery: senders.Delivery,
        report: NotifyReport,
    ) -> None:
        attempts = max(row.attempts for row in held.rows)
        if attempts >= self.max_attempts:
            why = f"gave up after {attempts} attempts: {delivery.detail}"
            self._settle(held, NOTIFY_FAILED, now, why, report)
            return
        asked = delivery.retry_after or 0.0
        if not asked <= MAX_RETRY_AFTER.total_seconds():  # also NaN and inf: no overflow
            asked = MAX_RETRY_AFTER.total_seconds()
        delay = max(asked, self.backoff(attempts))
        at = now + timedelta(seconds=delay)
        self._settle(held, NOTIFY_PENDING, now, delivery.detail, report, retry_at=at)

    def _unanswered(
        self, held: NotificationClaim, now: datetime, detail: str, report: NotifyReport
    ) -> None:
        """An idempotent target's outcome is unknown: the claim is kept (``sending``) until a
        backoff has passed, then taken up again as a stale one — a signed webhook resent with
        the same delivery id and the same rows, a Slack bot message looked for first."""
        attempts = max(row.attempts for row in held.rows)
        if attempts >= self.max_attempts:
            why = f"gave up after {attempts} attempts, the last unanswered: {detail}"
            self._settle(held, NOTIFY_UNKNOWN, now, why, report)
            return
        until = now + timedelta(seconds=self.backoff(attempts))
        if self.store.renew_notifications(held, until):
            report.retried += 1
            report.details.append(f"{held.target} #{held.delivery_id}: {self._mask(detail)}")
            log.warning(
                "notification %s to %s: %s; trying again after %s",
                held.delivery_id,
                held.target,
                self._mask(detail),
                until.isoformat(timespec="seconds"),
            )

    def _settle(
        self,
        held: NotificationClaim,
        state: str,
        now: datetime,
        error: str | None,
        report: NotifyReport,
        detail: str | None = None,
        *,
        retry_at: datetime | None = None,
    ) -> None:
        masked = None if error is None else self._mask(error)
        if not self.store.settle_notifications(held, state, now, error=masked, retry_at=retry_at):
            log.warning(
                "notification %s to %s: claim lost before it was settled (another worker has it)",
                held.delivery_id,
                held.target,
            )
            return
        rows = f"{len(held.rows)} escalations" if len(held.rows) > 1 else "1 escalation"
        line = f"{held.target} #{held.delivery_id} ({rows}): {state}"
        said = masked if state != NOTIFY_SENT else detail
        report.details.append(f"{line}: {said}" if said else line)
        if state == NOTIFY_SENT:
            report.sent += 1
            log.info("notification %s to %s sent (%s)", held.delivery_id, held.target, rows)
        elif state == NOTIFY_PENDING:
            report.retried += 1
            log.warning(
                "notification %s to %s: %s; retrying", held.delivery_id, held.target, masked
            )
        elif state == NOTIFY_FAILED:
            report.failed += 1
            log.error("notification %s to %s failed: %s", held.delivery_id, held.target, masked)
        else:
            report.unknown += 1
            report.details.append(UNKNOWN_HINT.format(id=held.delivery_id))
            log.error(
                "notification %s to %s: outcome unknown: %s; %s",
                held.delivery_id,
                held.target,
                masked,
                UNKNOWN_HINT.format(id=held.delivery_id),
            )

    def _mask(self, text: str) -> str:
        return self.redactor(text)


def longest_send(target: NotifyTarget) -> timedelta:
    """The longest one message to ``target`` can take with every step at its timeout: one HTTP
    request; a Slack bot's read-back of the channel (every page) and its post; an SMTP
    conversation (connect, greeting, EHLO, STARTTLS, EHLO, AUTH's two steps, MAIL, one RCPT
    per recipient, DATA, the message, its answer, QUIT: each its own timeout)."""
    from escbridge.notify.model import EmailSettings, SlackBot

    request = senders.CONNECT_TIMEOUT + senders.READ_TIMEOUT
    s = target.settings
    if isinstance(s, EmailSettings):
        return timedelta(seconds=(12 + len(s.to)) * senders.READ_TIMEOUT)
    if isinstance(s, SlackBot):
        return timedelta(seconds=(senders.SLACK_HISTORY_PAGES + 1) * request)
    return timedelta(seconds=request)


def send_message(
    target: NotifyTarget,
    contexts: Sequence[Mapping[str, Any]],
    delivery_id: int,
    now: datetime,
    *,
    session: requests.Session | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> senders.Delivery:
    """Render ``contexts`` (one escalation, or a digest) for a resolved ``target`` and send it:
    the one path of the outbox and of `escbridge notify test`."""
    from escbridge.notify.messages import HttpMessage, render
    from escbridge.notify.model import (
        EmailSettings,
        SignedWebhook,
        SlackBot,
        SlackWebhook,
        TeamsWebhook,
    )

    message = render(target, contexts)
    s = target.settings
    if isinstance(s, EmailSettings):
        if isinstance(message, HttpMessage):
            raise TypeError(f"target {target.id}: an e-mail target rendered an HTTP message")
        mail = senders.build_mail(
            sender=s.sender,
            to=s.to,
            subject=message.subject,
            text=message.text,
            html=message.html,
            msg_id=senders.message_id(delivery_id, target.id, s.sender),
            now=now,
        )
        return senders.send_mail(
            host=s.host,
            port=s.port,
            security=s.security,
            username=s.username,
            password=s.password,
            mail=mail,
            recipients=s.to,
            context=ssl_context,
        )
    if not isinstance(message, HttpMessage):
        raise TypeError(f"target {target.id}: an HTTP target rendered a mail")
    if isinstance(s, SlackWebhook):
        return senders.send_slack_webhook(s.webhook_url, message.body, session=session)
    if isinstance(s, SlackBot):
        return senders.send_slack_bot(
            s.token, s.channel, message.body, delivery_id, session=session, api=s.api_url
        )
    if isinstance(s, TeamsWebhook):
        return senders.send_teams(s.url, message.body, session=session)
    if isinstance(s, SignedWebhook):
        return senders.send_webhook(
            s.url, s.secret, message.body, delivery_id, now, session=session
        )
    raise TypeError(f"target {target.id}: unknown settings {type(s).__name__}")


__all__ = [
    "LEASE_MARGIN",
    "MAX_RETRY_AFTER",
    "UNKNOWN_HINT",
    "Notifier",
    "NotifyReport",
    "longest_send",
    "outbox_rows",
    "send_message",
]
