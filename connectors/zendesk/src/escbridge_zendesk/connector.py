"""ZendeskConnector: escbridge's connector contract, spoken to the Zendesk Support API."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import requests

from escbridge.connector import (
    CAP_BULK_UPDATE,
    CAP_EVENT_WEBHOOKS,
    CAP_INCREMENTAL_SYNC,
    CAP_SAFE_UPDATE,
    CAP_SANDBOX,
    CAP_TRIGGER_WEBHOOKS,
    ApplyResult,
    CheckReport,
    ConflictHandler,
    Connector,
    ConnectorInfo,
    TicketPage,
)
from escbridge.http import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    PermissionDeniedError,
    RetryPolicy,
    TransientError,
    ValidationError,
)
from escbridge.model import Actions, Ticket, TicketEvent
from escbridge_zendesk import webhook
from escbridge_zendesk.client import MAX_BATCH, SEARCH_CAP, UPDATE_BUCKET, ZendeskApi
from escbridge_zendesk.config import ZendeskConfig
from escbridge_zendesk.parse import (
    format_time,
    job_result_outcomes,
    latest_public_comment,
    level_tag,
    parse_ticket,
    parse_time,
)

if TYPE_CHECKING:
    from escbridge_zendesk.sandbox_driver import ZendeskDriver

log = logging.getLogger(__name__)

__version__ = "0.1.0"

INCREMENTAL_LAG = timedelta(seconds=60)  # Zendesk leaves out changes of the last minute
GROUP_REFRESH_SECONDS = 60.0
_INC, _SEARCH = "inc:", "search:"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownGroupError(Exception):
    """The matrix names a group this Zendesk account does not have."""


class _MinuteGate:
    """Client-side cap for endpoints whose limit Zendesk does not announce in headers
    (incremental exports: 10 requests per minute)."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> float:
        with self._lock:
            now = self._clock()
            while self._calls and now - self._calls[0] >= 60.0:
                self._calls.popleft()
            delay = 0.0
            if len(self._calls) >= self.per_minute:
                delay = self._calls[0] + 60.0 - now
            if delay > 0:
                self._sleep(delay)
                now += delay
                self._calls.popleft()
            self._calls.append(now)
            return delay


class ZendeskConnector:
    """Zendesk, spoken in escbridge's normalised vocabulary.

    Construct with the instance's ``ZendeskConfig``; ``session``, ``sleep``, ``clock``, ``utcnow``
    and ``rng`` are injectable so tests neither sleep nor touch the network.
    """

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="zendesk",
        version=__version__,
        display_name="Zendesk",
        capabilities=frozenset(
            {
                CAP_BULK_UPDATE,
                CAP_SAFE_UPDATE,
                CAP_EVENT_WEBHOOKS,
                CAP_TRIGGER_WEBHOOKS,
                CAP_INCREMENTAL_SYNC,
                CAP_SANDBOX,
            }
        ),
        signature_scheme="HMAC-SHA256 (X-Zendesk-Webhook-Signature over timestamp + body)",
        config_model=ZendeskConfig,
    )

    def __init__(
        self,
        config: ZendeskConfig,
        *,
        instance: str = "zendesk",
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.instance = instance
        self._sleep = sleep
        self._clock = clock
        self._utcnow = utcnow
        self.api = ZendeskApi(
            config,
            session=session,
            sleep=sleep,
            clock=clock,
            utcnow=utcnow,
            rng=rng,
            policy=policy,
        )
        self._incremental_gate = _MinuteGate(config.incremental_per_minute, clock, sleep)
        self._lock = threading.Lock()
        self._group_ids: dict[str, int] = {}  # casefolded name -> id
        self._group_names: dict[int, str] = {}
        self._groups_loaded_at: float | None = None
        self._own_id: str | None = (
            str(config.integration_user_id) if config.integration_user_id else None
        )
        self._sync_mode: str | None = None if config.sync == "auto" else config.sync

    def __repr__(self) -> str:
        return f"ZendeskConnector(instance={self.instance!r}, url={self.config.api_url!r})"

    # ------------------------------------------------------------------ check

    def check(self, groups: Collection[str]) -> CheckReport:
        """Who we are, whether the account answers, and which matrix groups are missing."""
        problems: list[str] = []
        notes: list[str] = []
        base = self.config.api_url
        try:
            me = self.api.me()
        except AuthError as exc:
            how = "oauth_token" if self.config.oauth_token else "email and api_token"
            return CheckReport(
                ok=False,
                problems=(
                    f"Zendesk rejected the credentials (HTTP 401: {exc.message}); "
                    f"check {how} for {base}",
                ),
            )
        except NotFound:
            return CheckReport(
                ok=False,
                problems=(f"no Zendesk account answers at {base}: check the subdomain",),
            )
        except TransientError as exc:
            return CheckReport(ok=False, problems=(f"cannot reach {base}: {exc.message}",))
        except ApiError as exc:
            return CheckReport(ok=False, problems=(f"{base}: {exc}",))

        if me.get("id") is None:
            return CheckReport(
                ok=False,
                problems=(
                    "Zendesk answered as the anonymous user: the credentials were not accepted "
                    "(is the token active and the email the token owner's?)",
                ),
            )
        self._own_id = self._own_id or str(me["id"])
        role = str(me.get("role") or "")
        identity = f"{me.get('name') or ''} <{me.get('email') or ''}> (user {me['id']}, {role})"
        if role == "end-user":
            problems.append("the API user is an end-user: escbridge needs an agent or admin")
        elif role != "admin":
            if self.config.sync == "incremental":
                problems.append(
                    "sync: incremental is configured but incremental export needs an admin"
                )
            else:
                notes.append(
                    "not an admin: sync uses search (1,000 results per query, handled by "
                    "windowing; new changes take minutes to be indexed)"
                )
        else:
            notes.append("sync uses the incremental export (admin): 10 requests/minute")
        if self.config.integration_user_id and str(self.config.integration_user_id) != str(
            me["id"]
        ):
            problems.append(
                f"integration_user_id {self.config.integration_user_id} is not the API user "
                f"({me['id']}): escbridge's own changes would not be recognised"
            )
        if self.config.webhook_secret is None:
            notes.append("no webhook_secret: webhooks will be refused (sync still works)")

        missing: list[str] = []
        if groups:
            try:
                self._load_groups(force=True)
            except PermissionDeniedError as exc:
                problems.append(f"cannot list groups: {exc.message}")
            else:
                missing = [g for g in groups if g.casefold() not in self._group_ids]
        return CheckReport(
            ok=not problems and not missing,
            identity=identity,
            missing_groups=tuple(missing),
            problems=tuple(problems),
            notes=tuple(notes),
        )

    # ------------------------------------------------------------------ groups

    def _load_groups(self, force: bool = False) -> None:
        with self._lock:
            fresh = self._groups_loaded_at is not None and (
                self._clock() - self._groups_loaded_at < GROUP_REFRESH_SECONDS
            )
            if fresh and not force:
                return
        groups = self.api.groups()
        with self._lock:
            self._group_ids = {
                str(g["name"]).casefold(): int(g["id"]) for g in groups if not g.get("deleted")
            }
            self._group_names = {int(g["id"]): str(g["name"]) for g in groups}
            self._groups_loaded_at = self._clock()

    def _ensure_groups(self) -> None:
        if self._groups_loaded_at is None:
            self._load_groups()

    def group_id(self, name: str) -> int:
        """The id of a group by name (case-insensitive); refreshed once on a miss."""
        self._ensure_groups()
        key = name.casefold()
        if key not in self._group_ids:
            self._load_groups()
        if key not in self._group_ids:
            known = ", ".join(sorted(self._group_names.values())) or "none"
            raise UnknownGroupError(
                f'group "{name}" does not exist in Zendesk {self.config.api_url} (groups: {known})'
            )
        return self._group_ids[key]

    # ------------------------------------------------------------------ tickets

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        return parse_ticket(raw, instance=self.instance, group_names=self._group_names)

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """One ticket, fresh, with ``latest_comment`` (the event path: webhooks, re-fetches).

        Two GETs: Show Ticket (comments are not part of it) and List Comments, newest first;
        ``latest_comment`` is the newest public comment, internal notes skipped. If the comments
        cannot be read (404/403) the ticket comes back with ``latest_comment`` empty.
        """
        self._ensure_groups()
        data = self.api.ticket(str(ticket_id), include="metric_sets")
        raw = data.get("ticket") or {}
        if raw.get("group_id") is not None and int(raw["group_id"]) not in self._group_names:
            self._load_groups()  # a group created since we looked
        comment = ""
        try:
            comment = latest_public_comment(self.api.comments(str(ticket_id)))
        except (NotFound, PermissionDeniedError) as exc:
            log.warning(
                "ticket %s: cannot read its comments (HTTP %s); latest_comment left empty",
                ticket_id,
                exc.status,
            )
        return parse_ticket(
            data, instance=self.instance, group_names=self._group_names, latest_comment=comment
        )

    # ------------------------------------------------------------------ apply

    def _ticket_body(self, ticket: Ticket, actions: Actions) -> dict[str, Any]:
        """The ``ticket`` object of one update: everything in one write.

        Tags: with the ticket's ``updated_at`` as ``updated_stamp`` (safe update), the full tag
        list computed from the fetched tags is safe — had a human changed any tag meanwhile,
        Zendesk answers 409 and we recompute from fresh tags. Without a stamp we send only
        ``additional_tags``/``remove_tags`` (documented for update_many, not for a single PUT:
        ``apply`` checks the result and falls back to the Tags API).
        """
        body: dict[str, Any] = {}
        if actions.group:
            body["group_id"] = self.group_id(actions.group)
        if actions.priority is not None:
            body["priority"] = actions.priority.label
        if actions.unassign:
            body["assignee_id"] = None
        note = actions.note or actions.customer_update
        if note:
            body["comment"] = {"body": note, "public": not actions.note}
        add, remove = _tag_changes(actions)
        if ticket.version:
            new_tags = (set(ticket.tags) | add) - remove
            if new_tags != set(ticket.tags):
                body["tags"] = sorted(new_tags)
        else:
            if add - set(ticket.tags):
                body["additional_tags"] = sorted(add)
            if remove & set(ticket.tags):
                body["remove_tags"] = sorted(remove)
        if body and ticket.version:
            body["safe_update"] = True
            body["updated_stamp"] = ticket.version
        return body

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        """One escalation in one ``PUT /tickets/{id}`` with ``safe_update`` + ``updated_stamp``.

        409 (someone changed the ticket since it was read): with ``on_conflict``, re-fetch the
        ticket, ask ``on_conflict(fresh)`` for the actions now (None: nothing to do any more ->
        ``skipped``) and retry, up to ``conflict_retries`` times; without it, raise ``Conflict``
        so the caller re-fetches and re-decides. Ticket-specific refusals (unknown group, 404,
        422) come back as a failed ApplyResult; auth, throttling and outages raise.
        A ``customer_update`` next to a note needs a second PUT (one comment per update).
        """
        conflicts = 0
        while True:
            try:
                return self._apply_once(ticket, actions, conflicts)
            except Conflict:
                conflicts += 1
                if on_conflict is None or conflicts > self.config.conflict_retries:
                    raise
                log.info("ticket %s changed meanwhile (409): re-fetching", ticket.id)
                ticket = self.fetch_ticket(ticket.id)
                fresh_actions = on_conflict(ticket)
                if fresh_actions is None:
                    return ApplyResult(
                        ticket.id,
                        ok=True,
                        skipped=True,
                        conflicts=conflicts,
                        version=ticket.version,
                    )
                actions = fresh_actions
            except UnknownGroupError as exc:
                return ApplyResult(ticket.id, ok=False, error=str(exc), conflicts=conflicts)
            except NotFound as exc:
                return ApplyResult(
                    ticket.id,
                    ok=False,
                    error=f"ticket not found: {exc.message}",
                    conflicts=conflicts,
                )
            except ValidationError as exc:
                return ApplyResult(
                    ticket.id, ok=False, error=_validation_text(exc), conflicts=conflicts
                )

    def _apply_once(self, ticket: Ticket, actions: Actions, conflicts: int) -> ApplyResult:
        body = self._ticket_body(ticket, actions)
        if not body:
            return ApplyResult(
                ticket.id,
                ok=True,
                skipped=True,
                actions=actions,
                version=ticket.version,
                conflicts=conflicts,
            )
        data = self.api.update_ticket(ticket.id, body)
        after = data.get("ticket") or {}
        version = after.get("updated_at") or ticket.version
        if "additional_tags" in body or "remove_tags" in body:
            self._ensure_tags(ticket.id, after, body)
        if actions.note and actions.customer_update:
            public: dict[str, Any] = {"comment": {"body": actions.customer_update, "public": True}}
            if version:
                public |= {"safe_update": True, "updated_stamp": version}
            data = self.api.update_ticket(ticket.id, public)
            version = (data.get("ticket") or {}).get("updated_at") or version
        return ApplyResult(
            ticket.id, ok=True, actions=actions, version=version, conflicts=conflicts
        )

    def _ensure_tags(
        self, ticket_id: str, after: Mapping[str, Any], body: Mapping[str, Any]
    ) -> None:
        """Whether a single PUT honours additional_tags/remove_tags is undocumented: check the
        returned tags and finish the job with the Tags API if it did not."""
        tags = {str(t).lower() for t in after.get("tags") or []}
        missing = [t for t in body.get("additional_tags", []) if t not in tags]
        present = [t for t in body.get("remove_tags", []) if t in tags]
        if missing:
            log.info("ticket %s: additional_tags ignored on PUT, using the Tags API", ticket_id)
            self.api.add_tags(ticket_id, missing, None)
        if present:
            self.api.remove_tags(ticket_id, present)

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        """``PUT /tickets/update_many`` in the batch form (≤100 per job), then job_statuses.

        Batches are sized to the Update Ticket budget the last response announced. Each ticket
        carries its own ``safe_update`` + ``updated_stamp`` (Zendesk requires both in a batch).
        Results are mapped back by ticket id; a ticket missing from the results, or a failed
        job, is a retryable failure. Conflicts are retried one by one through ``apply`` when
        ``on_conflict`` is given. A single item is one plain PUT (cheaper than job + polling).
        """
        results: list[ApplyResult | None] = [None] * len(items)
        pending: list[tuple[int, Ticket, Actions, dict[str, Any]]] = []
        for index, (ticket, actions) in enumerate(items):
            try:
                body = self._ticket_body(ticket, actions)
            except UnknownGroupError as exc:
                results[index] = ApplyResult(ticket.id, ok=False, error=str(exc))
                continue
            if not body:
                results[index] = ApplyResult(
                    ticket.id, ok=True, skipped=True, actions=actions, version=ticket.version
                )
                continue
            pending.append((index, ticket, actions, body))

        if len(pending) == 1:
            index, ticket, actions, _ = pending[0]
            results[index] = self._apply_reporting_conflict(ticket, actions, on_conflict)
            pending = []

        while pending:
            size = self._batch_size()
            chunk, pending = pending[:size], pending[size:]
            for index, result in self._run_batch(chunk, on_conflict):
                results[index] = result
        return [r for r in results if r is not None]

    def _apply_reporting_conflict(
        self, ticket: Ticket, actions: Actions, on_conflict: ConflictHandler | None
    ) -> ApplyResult:
        try:
            return self.apply(ticket, actions, on_conflict=on_conflict)
        except Conflict as exc:
            return ApplyResult(
                ticket.id,
                ok=False,
                error=f"conflict: {exc.message}",
                retryable=True,
                conflict=True,
                conflicts=1,
            )

    def _batch_size(self) -> int:
        rate = self.api.client.rate_limit(UPDATE_BUCKET)
        size = MAX_BATCH
        if rate is not None:
            if rate.limit:
                size = min(size, rate.limit)
            if rate.remaining is not None and 0 < rate.remaining < size:
                size = rate.remaining
        return max(1, size)

    def _run_batch(
        self,
        chunk: Sequence[tuple[int, Ticket, Actions, dict[str, Any]]],
        on_conflict: ConflictHandler | None,
    ) -> list[tuple[int, ApplyResult]]:
        tickets = [{"id": int(t.id), **body} for _, t, _, body in chunk]
        try:
            job = self.api.update_many(tickets)
            job = self._wait_for_job(job)
        except (ValidationError, NotFound) as exc:
            text = _validation_text(exc) if isinstance(exc, ValidationError) else str(exc)
            return [(i, ApplyResult(t.id, ok=False, error=text)) for i, t, _, _ in chunk]
        status = str(job.get("status") or "")
        if status != "completed":
            why = f"job {job.get('id')} {status or 'unknown'}: {job.get('message') or ''}".strip()
            return [
                (i, ApplyResult(t.id, ok=False, error=why, retryable=True)) for i, t, _, _ in chunk
            ]
        outcomes = job_result_outcomes(job.get("results"))
        out: list[tuple[int, ApplyResult]] = []
        for index, ticket, actions, _ in chunk:
            outcome = outcomes.get(ticket.id)
            if outcome is None:
                out.append(
                    (
                        index,
                        ApplyResult(
                            ticket.id,
                            ok=False,
                            retryable=True,
                            error=f"ticket missing from the results of job {job.get('id')}",
                        ),
                    )
                )
                continue
            ok, error, conflict = outcome
            if ok:
                out.append((index, ApplyResult(ticket.id, ok=True, actions=actions)))
            elif conflict and on_conflict is not None:
                fresh = self.fetch_ticket(ticket.id)
                fresh_actions = on_conflict(fresh)
                if fresh_actions is None:
                    result = ApplyResult(ticket.id, ok=True, skipped=True, conflicts=1)
                else:
                    result = self._apply_reporting_conflict(fresh, fresh_actions, on_conflict)
                    result = _add_conflict(result)
                out.append((index, result))
            else:
                out.append(
                    (
                        index,
                        ApplyResult(
                            ticket.id,
                            ok=False,
                            error=error,
                            retryable=conflict,
                            conflict=conflict,
                            conflicts=int(conflict),
                        ),
                    )
                )
        return out

    def _wait_for_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Poll job_statuses until completed/failed (or the configured timeout)."""
        job_id = job.get("id")
        if not job_id:
            raise ApiError("update_many answered without a job id")
        delay = 0.1
        deadline = self._clock() + self.config.job_timeout
        while str(job.get("status")) not in ("completed", "failed", "killed"):
            if self._clock() >= deadline:
                job = {**job, "status": "timeout", "message": "still running; not waited for"}
                break
            self._sleep(delay)
            delay = min(delay * 2, self.config.job_poll_max_interval)
            job = self.api.job_status(str(job_id)) or job
        return job

    # ------------------------------------------------------------------ sync

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets changed since ``cursor`` (or ``since``), page by page, for sync.

        Preferred: the cursor-based incremental export (Admin only; 10 requests/minute, kept by
        a client-side gate; changes of the last minute are held back by Zendesk, so start_time
        is never later than a minute ago and the saved cursor picks them up next run).
        Non-admin tokens (403) fall back to search, ``updated>=`` windows slid forward past the
        1,000-result cap. Cursors are ``inc:<after_cursor>`` or ``search:<updated_at>``.
        Tickets repeated across pages or runs are harmless: applying is idempotent.
        Sync-path tickets carry ``latest_comment`` only when available cheaply — neither the
        export nor search includes comments, and one List Comments call per ticket would break
        the rate-limit budget — so here it is empty; ``fetch_ticket`` (events) fills it.
        """
        self._ensure_groups()
        mode = self._sync_mode
        if cursor and cursor.startswith(_SEARCH):
            mode = "search"
        elif cursor and cursor.startswith(_INC):
            mode = "incremental" if self._sync_mode != "search" else "search"
        if mode in (None, "incremental"):
            try:
                yield from self._incremental(since, cursor)
                self._sync_mode = "incremental"
                return
            except PermissionDeniedError:
                if self.config.sync == "incremental":
                    raise
                log.warning(
                    "instance %s: incremental export needs an admin; using search", self.instance
                )
                self._sync_mode = "search"
        search_since = since or EPOCH
        if cursor and cursor.startswith(_SEARCH):
            search_since = parse_time(cursor[len(_SEARCH) :]) or search_since
        yield from self._search(search_since)

    def _incremental(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        after = cursor[len(_INC) :] if cursor and cursor.startswith(_INC) else None
        while True:
            self._incremental_gate.wait()
            if after:
                data = self.api.incremental(cursor=after)
            else:
                latest = self._utcnow() - INCREMENTAL_LAG
                start = min(since or EPOCH, latest)
                try:
                    data = self.api.incremental(start_time=int(start.timestamp()))
                except ValidationError as exc:
                    if "start_time" not in str(exc).lower():
                        raise
                    # "Too recent start_time" (undocumented): step back and try once more.
                    self._incremental_gate.wait()
                    start = self._utcnow() - 2 * INCREMENTAL_LAG
                    data = self.api.incremental(start_time=int(start.timestamp()))
            tickets = self._open_tickets(data.get("tickets") or [], data.get("metric_sets"))
            after = data.get("after_cursor") or after
            done = bool(data.get("end_of_stream", True))
            yield TicketPage(tickets, f"{_INC}{after}" if after else None, done)
            if done or not after:
                return

    def _search(self, since: datetime) -> Iterator[TicketPage]:
        window = since
        extra = f" {self.config.search_filter}" if self.config.search_filter else ""
        while True:
            query = f"type:ticket status<solved updated>={format_time(window)}{extra}"
            seen = 0
            last: datetime | None = None
            slide = False
            for page in range(1, SEARCH_CAP // 100 + 1):
                try:
                    data = self.api.search(query, page=page, per_page=100)
                except ValidationError as exc:
                    if seen and "limit" in str(exc).lower():
                        slide = True  # past the cap after all: continue from a new window
                        break
                    raise
                results = [
                    r
                    for r in data.get("results") or []
                    if r.get("result_type", "ticket") == "ticket"
                ]
                seen += len(results)
                for raw in results:
                    when = parse_time(raw.get("updated_at"))
                    if when is not None and (last is None or when > last):
                        last = when
                cursor = f"{_SEARCH}{format_time(last or window)}"
                tickets = self._open_tickets(results, None)
                exhausted = not data.get("next_page") or len(results) < 100
                if exhausted:
                    yield TicketPage(tickets, cursor, done=True)
                    return
                if seen >= SEARCH_CAP:
                    yield TicketPage(tickets, cursor, done=False)
                    slide = True
                    break
                yield TicketPage(tickets, cursor, done=False)
            if not slide:
                return
            next_window = last or window
            if next_window <= window:
                # More than 1,000 tickets share one second: step past it rather than loop.
                log.warning("over 1,000 tickets updated at %s; stepping 1 s forward", window)
                next_window = window + timedelta(seconds=1)
            window = next_window

    def _open_tickets(self, raws: Sequence[Mapping[str, Any]], metric_sets: Any) -> list[Ticket]:
        by_ticket: dict[Any, Mapping[str, Any]] = {}
        if isinstance(metric_sets, list):
            by_ticket = {m.get("ticket_id"): m for m in metric_sets if isinstance(m, Mapping)}
        if any(
            r.get("group_id") is not None and int(r["group_id"]) not in self._group_names
            for r in raws
        ):
            self._load_groups()
        out = []
        for raw in raws:
            if raw.get("status") == "deleted":
                continue
            ticket = parse_ticket(
                raw,
                instance=self.instance,
                group_names=self._group_names,
                metric_set=by_ticket.get(raw.get("id")),
            )
            if ticket.status.is_open:
                out.append(ticket)
        return out

    # ------------------------------------------------------------------ webhooks

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None:
        secret = self.config.webhook_secret
        webhook.verify(
            headers,
            body,
            secret.get_secret_value() if secret is not None else None,
            now=self._utcnow(),
            window=timedelta(seconds=self.config.replay_window_seconds),
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]:
        return webhook.parse(headers, body, instance=self.instance)

    def own_user_id(self) -> str | None:
        """The integration user's id: configured, or learned once from /users/me."""
        if self._own_id is None:
            try:
                user_id = self.api.me().get("id")
            except ApiError as exc:
                log.warning("cannot learn the integration user id: %s", exc)
                return None
            self._own_id = str(user_id) if user_id is not None else None
        return self._own_id

    def is_own_change(self, event: TicketEvent) -> bool:
        return event.actor is not None and event.actor == self.own_user_id()

    # ------------------------------------------------------------------ sandbox

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating Zendesk (see escbridge_zendesk.sandbox.ZendeskSandbox)."""
        from escbridge_zendesk.sandbox import ZendeskSandbox

        return ZendeskSandbox(**options).app

    @classmethod
    def sandbox_driver(cls) -> ZendeskDriver:
        """The Zendesk emulator driven for `escbridge sandbox` and `escbridge demo`."""
        from escbridge_zendesk.sandbox_driver import ZendeskDriver

        return ZendeskDriver()


def _tag_changes(actions: Actions) -> tuple[set[str], set[str]]:
    add = {t.lower() for t in actions.tags_add}
    if actions.level:
        add.add(level_tag(actions.level))
    remove = {t.lower() for t in actions.tags_remove} - add
    return add, remove


def _validation_text(exc: ValidationError) -> str:
    if exc.fields:
        return "; ".join(f"{f.field}: {f.message}" for f in exc.fields)
    return exc.message


def _add_conflict(result: ApplyResult) -> ApplyResult:
    from dataclasses import replace

    return replace(result, conflicts=result.conflicts + 1)


def _conforms(connector: ZendeskConnector) -> Connector:
    """mypy proves here that ZendeskConnector meets the Connector protocol."""
    return connector
