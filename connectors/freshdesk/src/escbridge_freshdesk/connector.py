"""FreshdeskConnector: escbridge's connector contract, spoken to the Freshdesk API v2.

What is Freshdesk's own: no conditional update (a concurrent edit is an ``updated_at`` that moved
since the caller read the ticket, checked on a re-read just before the PUT), an escalation in two
calls (``PUT /tickets/{id}``, then the private note; see ``notes`` for why it is written exactly
once), ``bulk_update`` for tickets that get the same change, and webhooks guarded by a shared
secret. The apply loop, conflict semantics and group cache come from ``escbridge.connector``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from escbridge.connector import (
    CAP_BULK_UPDATE,
    CAP_INCREMENTAL_SYNC,
    CAP_RESUMABLE_APPLY,
    CAP_SANDBOX,
    CAP_TRIGGER_WEBHOOKS,
    ApplyResult,
    BaseConnector,
    CheckReport,
    Connector,
    ConnectorInfo,
    Group,
    GroupDirectory,
    Runtime,
    TicketPage,
    WebhookRequest,
    check_identity,
    poll_job,
)
from escbridge.connector.kit import Identity, fields_text
from escbridge.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimited,
    TicketChanged,
    ValidationError,
)
from escbridge.http import RetryPolicy
from escbridge.model import Actions, LevelMarker, Ticket, TicketEvent

from . import notes, webhook
from .client import FreshdeskApi
from .config import FreshdeskConfig, base_url_for
from .parse import STATUSES, Lookups, parse_ticket, parse_time, status_category

if TYPE_CHECKING:
    from .sandbox_driver import FreshdeskDriver

log = logging.getLogger(__name__)

__all__ = ["CAP_RESUMABLE_APPLY", "FreshdeskConnector"]

__version__ = "0.2.0"

MAX_PAGES = 300  # GET /tickets refuses page 301 ("You cannot access tickets beyond the 300th page")
BULK_MAX = 100  # ids per bulk_update (UNCONFIRMED; third-party docs say 100)
LOOKUP_REFRESH_SECONDS = 60.0  # at most one reload of groups/statuses per minute on a miss
STATUS_TTL_SECONDS = 3600.0  # custom statuses are renamed rarely
NOTE_ATTEMPTS = 3
INCLUDE = "stats,requester"  # 2 extra credits each; stats give first response and reopen times
_JOB_DONE = {"SUCCESS", "PARTIAL", "FAILED", "COMPLETED", "ERROR"}
_RUNNING = "running"  # a bulk job's outcome for its tickets while it has not finished


@dataclass(frozen=True)
class _Write:
    """One escalation after the re-read: the ticket as it is (``raw``), the PUT body, and
    whether the PUT had already landed (``resumed``: only a missing note/reply is written)."""

    ticket: Ticket
    actions: Actions
    raw: Mapping[str, Any]
    body: dict[str, Any]
    resumed: bool = False


class FreshdeskConnector(BaseConnector[FreshdeskConfig, _Write]):
    """Freshdesk, spoken in escbridge's normalised vocabulary.

    Construct with the instance's ``FreshdeskConfig``; ``runtime`` (or a test's ``session=``,
    ``sleep=``, ``clock=``, ``utcnow=``, ``rng=``) keeps tests off the network and the clock.
    """

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="freshdesk",
        version=__version__,
        display_name="Freshdesk",
        capabilities=frozenset(
            {
                CAP_BULK_UPDATE,
                CAP_TRIGGER_WEBHOOKS,
                CAP_INCREMENTAL_SYNC,
                CAP_SANDBOX,
                CAP_RESUMABLE_APPLY,
            }
        ),
        signature_scheme="none (Freshdesk signs nothing): shared secret as basic auth or header",
        config_model=FreshdeskConfig,
    )

    def __init__(
        self,
        config: FreshdeskConfig,
        *,
        instance: str = "freshdesk",
        runtime: Runtime | None = None,
        policy: RetryPolicy | None = None,
        **test_overrides: Any,
    ) -> None:
        super().__init__(config, instance=instance, runtime=runtime, **test_overrides)
        self.api = FreshdeskApi(config, runtime=self.runtime, policy=policy)
        self.groups: GroupDirectory[int] = GroupDirectory(
            lambda: [Group(int(g["id"]), str(g["name"])) for g in self.api.groups()],
            instance=instance,
            min_reload=LOOKUP_REFRESH_SECONDS,
            clock=self.runtime.clock,
            parse_id=int,
        )
        self._status_names: dict[int, str] = {}
        self._field_names: set[str] = set()
        self._fields_at: float | None = None
        self.max_pages = MAX_PAGES  # Freshdesk's cap; lowered by tests against a small sandbox

    def __repr__(self) -> str:
        return f"FreshdeskConnector(instance={self.instance!r}, url={base_url_for(self.config)!r})"

    # ------------------------------------------------------------------ reference data

    def _stale(self, loaded_at: float | None, ttl: float) -> bool:
        return loaded_at is None or self.runtime.clock() - loaded_at >= ttl

    def _load_fields(self, force: bool = False) -> None:
        """Custom status names (field ``status``, ``choices``) and the custom field names."""
        if not force and not self._stale(self._fields_at, LOOKUP_REFRESH_SECONDS):
            return
        fields = self.api.ticket_fields()
        statuses: dict[int, str] = {}
        for field in fields:
            if field.get("name") == "status":
                statuses = _status_choices(field.get("choices"))
        self._status_names = statuses
        self._field_names = {str(f.get("name")) for f in fields if f.get("name")}
        self._fields_at = self.runtime.clock()

    def group_id(self, name: str) -> int:
        """The id of a group by name (case-insensitive); reloaded once on a miss."""
        return self.groups.id_of(name)

    def _load_lookups(self, raws: Sequence[Mapping[str, Any]]) -> None:
        """Load what parsing these tickets needs: unknown group ids, unknown custom statuses."""
        self.groups.note_tickets(raws, "group_id")
        custom = {int(r.get("status") or 2) for r in raws} - set(STATUSES)
        if custom and (
            self._stale(self._fields_at, STATUS_TTL_SECONDS)
            or not custom <= set(self._status_names)
        ):
            self._load_fields()

    def _lookups(self) -> Lookups:
        return Lookups(
            groups=self.groups.names(),
            statuses=dict(self._status_names),
            status_categories=dict(self.config.status_categories),
        )

    def _whoami(self) -> Identity | None:
        """The agent the API key belongs to (``/agents/me``): its id and e-mail, either of which
        a rule's body may name as the performer."""
        me = self.api.me()
        return _identity(me) if me.get("id") is not None else None

    # ------------------------------------------------------------------ check

    def agent_url(self, ticket_id: str) -> str | None:
        """``https://<domain>.freshdesk.com/a/tickets/<id>`` (the emulator's with a sandbox)."""
        root = base_url_for(self.config).removesuffix("/api/v2")
        return f"{root}/a/tickets/{quote(ticket_id, safe='')}"

    def check(self, groups: Collection[str]) -> CheckReport:
        """Who the key belongs to, whether the account answers, and which groups are missing."""
        where = f"{self.config.domain}.freshdesk.com"
        problems: list[str] = []
        notes_: list[str] = []
        me = check_identity(
            self.api.me,
            product="Freshdesk",
            where=where,
            credentials="api_key",
            not_found="check 'domain'",
        )
        if isinstance(me, CheckReport):
            return me
        contact = me.get("contact") or {}
        if me.get("id") is not None:
            self.identity.set(_identity(me))
        identity = (
            f"{contact.get('name') or ''} <{contact.get('email') or ''}> (agent {me.get('id')})"
        )
        if self.identity.known is not None:
            notes_.append(f"escbridge writes as {self.identity.known}")
        if me.get("occasional"):
            notes_.append("the API key's agent is an occasional agent (uses day passes)")

        missing: list[str] = []
        try:
            missing = self.groups.missing(groups)
            self._load_fields(force=True)
        except PermissionDeniedError as exc:
            problems.append(f"cannot read groups or ticket fields: {exc.message}")
        else:
            for code, name in sorted(self._status_names.items()):
                if code not in STATUSES:
                    category = status_category(code, self._lookups())
                    notes_.append(f'custom status {code} "{name}" counts as {category}')
            if self.config.level_field and self._level_field() is None:
                problems.append(
                    f'level_field "{self.config.level_field}" is not a ticket field '
                    "(see Admin > Ticket Fields; API names start with cf_)"
                )
        if self.config.webhook_secret is None:
            notes_.append("no webhook_secret: webhooks will be refused (sync still works)")
        return CheckReport.of(identity, problems=problems, missing_groups=missing, notes=notes_)

    def _level_field(self) -> str | None:
        """The configured level field as the API names it (with or without ``cf_``)."""
        name = self.config.level_field
        if name is None:
            return None
        if self._fields_at is None:
            self._load_fields()
        for candidate in (name, f"cf_{name}"):
            if candidate in self._field_names:
                return candidate
        return None

    # ------------------------------------------------------------------ tickets

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        """Pure: uses the cached group and status names (fetch/iter load them first)."""
        return parse_ticket(raw, self._lookups(), instance=self.instance)

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        raw = self.api.ticket(ticket_id, include=INCLUDE)
        self._load_lookups([raw])
        return self.parse_ticket(raw)

    # ------------------------------------------------------------------ apply (platform part)

    def _landed(self, raw: Mapping[str, Any], actions: Actions) -> bool:
        """Whether the PUT of ``actions`` is already on the ticket: the level tag shows it."""
        tags = {str(t).lower() for t in raw.get("tags") or ()}
        if actions.level:
            return LevelMarker.tag(actions.level) in tags
        checks: list[bool] = []
        if actions.group:
            checks.append(raw.get("group_id") == self.group_id(actions.group))
        add, _ = notes.tag_changes(actions)
        if add:
            checks.append(set(add) <= tags)
        return bool(checks) and all(checks)

    def _update_body(self, raw: Mapping[str, Any], actions: Actions) -> dict[str, Any]:
        """The PUT body: only what changes. Tags are the ticket's current tags (read just
        before) with ours added and removed, so tags a human added survive; priority is only
        ever raised."""
        body: dict[str, Any] = {}
        if actions.group:
            group = self.group_id(actions.group)
            if raw.get("group_id") != group:
                body["group_id"] = group
        if actions.priority is not None and int(actions.priority) > int(raw.get("priority") or 1):
            body["priority"] = int(actions.priority)
        if actions.unassign and raw.get("responder_id") is not None:
            body["responder_id"] = None
        current = [str(t) for t in raw.get("tags") or ()]
        add, remove = notes.tag_changes(actions)
        tags = [t for t in current if t.lower() not in remove]
        have = {t.lower() for t in tags}
        tags += [t for t in add if t not in have]
        if tags != current:
            body["tags"] = tags
        field = self._level_field() if actions.level else None
        if field is not None and (raw.get("custom_fields") or {}).get(field) != actions.level:
            body["custom_fields"] = {field: actions.level}
        return body

    def _prepare(self, ticket: Ticket, actions: Actions) -> _Write:
        """Re-read the ticket: for its current tags, to see whether the PUT already landed
        (resumable), and — Freshdesk having no conditional update — to see a concurrent edit
        as an ``updated_at`` different from ``ticket.version``."""
        raw = self.api.ticket(ticket.id)
        if self._landed(raw, actions):
            return _Write(ticket, actions, raw, {}, resumed=True)
        stamp = str(raw.get("updated_at") or "")
        if ticket.version and stamp != ticket.version:
            self._load_lookups([raw])
            raise TicketChanged(
                f"ticket {ticket.id} changed since it was read ({ticket.version} -> {stamp})",
                current=self.parse_ticket(raw),
                method="PUT",
                url=f"/tickets/{ticket.id}",
            )
        return _Write(ticket, actions, raw, self._update_body(raw, actions))

    def _write_one(self, prepared: _Write) -> ApplyResult:
        """``PUT /tickets/{id}`` (unless it landed), then the private note, then the reply."""
        raw = prepared.raw
        if prepared.body:
            raw = self._put(prepared.ticket.id, prepared.body)
        return self._write_notes(
            prepared.ticket.id, raw, prepared.actions, resumed=prepared.resumed
        )

    def _put(self, ticket_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT, tolerating two UNCONFIRMED behaviours: ``responder_id: null`` refused (retried
        without it, the escalation matters more than the unassign) and tags appended instead of
        replaced (a removed tag that stays is logged)."""
        try:
            after = self.api.update_ticket(ticket_id, body)
        except ValidationError as exc:
            if "responder_id" not in body or not any(f.field == "responder_id" for f in exc.fields):
                raise
            log.warning(
                "ticket %s: Freshdesk refused responder_id null (%s); escalating without "
                "unassigning",
                ticket_id,
                fields_text(exc),
            )
            after = self.api.update_ticket(
                ticket_id, {k: v for k, v in body.items() if k != "responder_id"}
            )
        if "tags" in body and "tags" in after:
            kept = {str(t).lower() for t in after.get("tags") or ()} - {
                str(t).lower() for t in body["tags"]
            }
            if kept:
                log.warning(
                    "ticket %s: Freshdesk kept tags escbridge removed (%s): it appended instead "
                    "of replacing; the newest level tag still wins",
                    ticket_id,
                    ", ".join(sorted(kept)),
                )
        return after

    def _write_notes(
        self,
        ticket_id: str,
        raw: Mapping[str, Any],
        actions: Actions,
        *,
        resumed: bool,
    ) -> ApplyResult:
        """The note (then the customer reply), each exactly once; see ``notes``.

        The result's version is the ticket's ``updated_at`` as escbridge's last call left it:
        a note or reply moves it, and its answer carries the new stamp (``updated_at`` of the
        conversation); without one, the PUT's (``raw``). Only answers to escbridge's own calls
        are used, never a read (``raw`` of a resumed write is one), which could carry a
        person's later change: the worker drops an event as escbridge's own when the ticket
        still has this version.
        """
        ref = notes.escalation_ref(ticket_id, actions)
        stamp = None if resumed else raw.get("updated_at")
        version = str(stamp) if stamp else None
        conversations: list[dict[str, Any]] = []
        if resumed and (actions.note or actions.customer_update):
            conversations = self.api.conversations(ticket_id)
        anchor: int | None = -1
        if actions.note:
            anchor = notes.find_note(conversations, ref) if resumed else None
            if anchor is None:
                text = notes.note_html(actions.note, ref)
                posted = self._create(
                    "note", ticket_id, lambda: self.api.create_note(ticket_id, text)
                )
                version = _stamp_of(posted) or version
                conversations, anchor = [], -1
        if actions.customer_update:
            update = actions.customer_update
            sent = (
                resumed and anchor is not None and notes.reply_after(conversations, anchor, update)
            )
            if not sent:
                reply = notes.reply_html(update)
                posted = self._create(
                    "customer update", ticket_id, lambda: self.api.create_reply(ticket_id, reply)
                )
                version = _stamp_of(posted) or version
        if resumed:
            log.info(
                "ticket %s: escalation %s had landed; wrote only what was missing", ticket_id, ref
            )
        return ApplyResult(
            ticket_id,
            ok=True,
            actions=actions,
            version=version,
            recovered=resumed,
        )

    def _create(self, what: str, ticket_id: str, post: Callable[[], Any]) -> Any:
        """POST once (its answer returned); repeated only after a failure that proves it was
        not carried out.

        429 means the POST was refused, so it is repeated after ``Retry-After``; so is any
        other failure that proves it was not carried out (could not connect, 503). A lost
        answer (timeout, connection reset, 5xx: ``OutcomeUnknown``)
        may hide a note that was created, or one that is still being created: it is raised,
        and ``BaseConnector`` waits, re-reads the conversations and posts only what is not
        there (the note by its reference line, the reply after our note).
        """
        for attempt in range(1, NOTE_ATTEMPTS + 1):
            try:
                return post()
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else 60.0
                if attempt == NOTE_ATTEMPTS or wait > self.api.client.policy.max_retry_after:
                    log.warning("ticket %s: %s not posted yet (throttled)", ticket_id, what)
                    raise
                self.runtime.sleep(wait)
            except (AuthError, PermissionDeniedError, NotFound, ValidationError, Conflict):
                log.warning("ticket %s: escalated, but the %s was refused", ticket_id, what)
                raise
            except OutcomeUnknown:
                log.warning("ticket %s: the %s's answer was lost: looking later", ticket_id, what)
                raise
            except ApiError as exc:
                if attempt == NOTE_ATTEMPTS:
                    log.warning("ticket %s: escalated, but the %s failed: %s", ticket_id, what, exc)
                    raise
                self.runtime.sleep(min(2.0**attempt, 30.0))

    # ------------------------------------------------------------------ bulk (platform part)

    #: What bulk ``properties.tags`` does (api-audit #16, UNCONFIRMED): None until seen on a
    #: ticket, True when it appended (an old level tag stayed), False when it replaced.
    _bulk_tags_append: bool | None = None

    def _bulk_key(self, prepared: _Write) -> str | None:
        """Tickets whose whole PUT body is the same — same group, priority, unassign and
        resulting tag list — share one ``bulk_update``; a resumed write goes alone, and so does
        one that removes tags once bulk is known to append them (a PUT does it in one call)."""
        if prepared.resumed or not prepared.body:
            return None
        if self._bulk_tags_append and _removed_tags(prepared):
            return None
        return json.dumps(prepared.body, sort_keys=True)

    def _bulk_size(self) -> int:
        return BULK_MAX

    def _write_bulk(self, batch: Sequence[_Write]) -> list[ApplyResult]:
        """One ``POST /tickets/bulk_update``; notes and replies are still per ticket (bulk has
        no private notes). A refused call (too many ids, a property bulk does not take, …)
        falls back to one PUT each, which gives every ticket its own answer."""
        ids = [w.ticket.id for w in batch]
        try:
            answer = self.api.bulk_update(ids, batch[0].body)
            outcome = self._bulk_outcome(answer, ids)
        except ValidationError as exc:
            log.info("bulk_update refused (%s): updating one by one", fields_text(exc))
            return [self._outcome(w.ticket.id, partial(self._write_one, w)) for w in batch]
        out: list[ApplyResult] = []
        for w in batch:
            error = outcome.get(w.ticket.id, "unknown")
            unknown = error == _RUNNING  # a job still running may yet write: settled by the base
            removed = _removed_tags(w)
            if error in ("unknown", _RUNNING):
                error = self._verify(w.ticket.id, w.body, removed)
            elif error is None and removed and self._bulk_tags_append is not False:
                # Bulk may append tags instead of replacing them: look until it is known.
                error = self._verify(w.ticket.id, {"tags": w.body["tags"]}, removed)
            if error is None:
                written = partial(
                    self._write_notes, w.ticket.id, {"updated_at": None}, w.actions, resumed=False
                )
                out.append(self._outcome(w.ticket.id, written))
            else:
                out.append(
                    ApplyResult(w.ticket.id, ok=False, error=error, retryable=True, unknown=unknown)
                )
        return out

    def _bulk_outcome(self, answer: Any, ids: Sequence[str]) -> dict[str, str | None]:
        """Ticket id -> None (updated), an error, or "unknown" (to be checked on the ticket;
        ``_RUNNING`` when the job had not finished, so the change may yet come).

        Two shapes are documented: ``{"succeeded": [ids], "failed": [{"id", "errors"}]}`` and
        ``{"job_id", "href"}`` for an asynchronous job polled at ``/jobs/{id}`` until
        SUCCESS / PARTIAL / FAILED.
        """
        if isinstance(answer, Mapping) and ("succeeded" in answer or "failed" in answer):
            return _succeeded_failed(answer, ids)
        if isinstance(answer, Mapping) and (answer.get("job_id") or answer.get("href")):
            job_id = str(
                answer.get("job_id") or str(answer.get("href")).rstrip("/").rsplit("/", 1)[-1]
            )
            return self._job_outcome(job_id, ids)
        log.warning("bulk_update answered in an unknown shape; checking each ticket")
        return dict.fromkeys(ids, "unknown")

    def _job_outcome(self, job_id: str, ids: Sequence[str]) -> dict[str, str | None]:
        poll = poll_job(
            lambda: self.api.job(job_id),
            lambda j: str(j.get("status") or "").upper() in _JOB_DONE,
            timeout=self.config.job_timeout,
            clock=self.runtime.clock,
            sleep=self.runtime.sleep,
            delay=0.5,
            max_delay=5.0,
        )
        status = str(poll.job.get("status") or "").upper()
        if not poll.finished:
            log.warning("bulk job %s still %s after %.0fs", job_id, status, self.config.job_timeout)
            return dict.fromkeys(ids, _RUNNING)
        per_ticket = _job_data(poll.job.get("data"))
        out: dict[str, str | None] = {}
        for ticket_id in ids:
            if ticket_id in per_ticket:
                out[ticket_id] = per_ticket[ticket_id]
            elif status in ("SUCCESS", "COMPLETED"):
                out[ticket_id] = None
            elif status in ("FAILED", "ERROR"):
                out[ticket_id] = f"bulk job {job_id} failed"
            else:
                out[ticket_id] = "unknown"
        return out

    def _verify(
        self, ticket_id: str, body: Mapping[str, Any], removed: Collection[str] = ()
    ) -> str | None:
        """Whether a bulk change is on the ticket (when the bulk answer did not say, or when
        its tags may have been appended): None, or what is missing.

        Tags: every tag of the body (ours and the humans' we read) must be there, and the
        ``removed`` ones (an old level tag) gone. Bulk that appended leaves them: then one PUT
        of the ticket's tags without them fixes it (a refused PUT is logged: the newest level
        tag wins anyway), and later writes that remove tags skip bulk (``_bulk_key``).
        """
        try:
            raw = self.api.ticket(ticket_id)
        except ApiError as exc:
            return f"bulk result unknown and the ticket could not be read: {exc.message}"
        tags = [str(t) for t in raw.get("tags") or ()]
        for key, value in body.items():
            if key == "tags":
                if not {str(t).lower() for t in value} <= {t.lower() for t in tags}:
                    return "bulk update did not reach the ticket (tags)"
            elif key == "custom_fields":
                got = raw.get("custom_fields") or {}
                if any(got.get(k) != v for k, v in value.items()):
                    return "bulk update did not reach the ticket (custom fields)"
            elif raw.get(key) != value:
                return f"bulk update did not reach the ticket ({key})"
        if not removed:
            return None
        left = sorted({t.lower() for t in tags} & set(removed))
        if not left:
            self._bulk_tags_append = False
            return None
        if not self._bulk_tags_append:
            log.warning(
                "Freshdesk bulk_update appended tags instead of replacing them (%s stayed on "
                "ticket %s): removing them with one update per ticket",
                ", ".join(left),
                ticket_id,
            )
        self._bulk_tags_append = True
        try:
            self.api.update_ticket(ticket_id, {"tags": [t for t in tags if t.lower() not in left]})
        except ApiError as exc:
            # The escalation is on the ticket; a stale tag left is what an appending PUT
            # leaves too (the newest level tag wins), so it is logged, not failed.
            log.warning(
                "ticket %s: could not remove %s after the bulk update: %s",
                ticket_id,
                ", ".join(left),
                exc,
            )
        return None

    # ------------------------------------------------------------------ sync

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets updated since ``cursor`` (or ``since``), oldest change first.

        ``GET /tickets?updated_since=…&order_by=updated_at&order_type=asc&per_page=100``,
        following the ``Link`` header. Freshdesk refuses page 301, so after page 300 the scan
        restarts with ``updated_since`` = the last ticket's ``updated_at`` (tickets sharing
        that second come again and are skipped). Status is filtered here (the list endpoint
        cannot filter on it). The cursor is the ``updated_at`` of the last ticket seen;
        without cursor or ``since``, the scan starts ``sync_lookback_days`` ago.
        """
        if cursor:
            try:
                start = parse_time(cursor)
            except ValueError:
                start = None
            if start is None:
                raise ValueError(f"not a Freshdesk sync cursor: {cursor!r}")
        elif since is not None:
            start = since
        else:
            start = self.runtime.utcnow() - timedelta(days=self.config.sync_lookback_days)
        restart = _iso(start)
        last_stamp = restart
        seen_at_stamp: set[str] = set()
        while True:
            params = {
                "updated_since": restart,
                "order_by": "updated_at",
                "order_type": "asc",
                "per_page": 100,
                "include": INCLUDE,
            }
            pages = self.api.pages("/tickets", params)
            page_number = 0
            capped = False
            for raws, next_url in pages:
                page_number += 1
                fresh: list[dict[str, Any]] = []
                for raw in raws or []:
                    stamp = str(raw.get("updated_at") or "")
                    key = str(raw.get("id"))
                    if stamp == last_stamp and key in seen_at_stamp:
                        continue  # seen before the restart
                    if stamp != last_stamp:
                        last_stamp, seen_at_stamp = stamp, set()
                    seen_at_stamp.add(key)
                    fresh.append(raw)
                self._load_lookups(fresh)
                tickets = [t for t in (self.parse_ticket(r) for r in fresh) if t.status.is_open]
                more = next_url is not None
                capped = more and page_number >= self.max_pages
                yield TicketPage(tickets, last_stamp, done=not more)
                if capped or not more:
                    break
            if not capped:
                return
            if parse_time(last_stamp) == parse_time(restart):
                # Over max_pages × 100 tickets share one second: step past it, not loop.
                log.warning(
                    "over %d pages of tickets updated at %s; stepping 1 s forward",
                    self.max_pages,
                    restart,
                )
                stepped = parse_time(restart)
                assert stepped is not None
                last_stamp = _iso(stepped + timedelta(seconds=1))
                seen_at_stamp = set()
            restart = last_stamp

    # ------------------------------------------------------------------ webhooks

    def verify_request(self, request: WebhookRequest) -> None:
        secret = self.config.webhook_secret
        webhook.verify_webhook(
            request.headers,
            secret=secret.get_secret_value() if secret is not None else None,
            username=self.config.webhook_username,
            header_name=self.config.webhook_header,
        )

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        return webhook.parse_webhook(
            request.headers,
            request.body,
            instance=self.instance,
            now=self.runtime.utcnow(),
            window=self.config.webhook_dedupe_window,
        )

    # ------------------------------------------------------------------ sandbox

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating Freshdesk (see escbridge_freshdesk.sandbox.FreshdeskSandbox)."""
        from .sandbox import FreshdeskSandbox

        return FreshdeskSandbox(**options).app

    @classmethod
    def sandbox_driver(cls) -> FreshdeskDriver:
        """The Freshdesk emulator driven for `escbridge sandbox` and `escbridge demo`."""
        from .sandbox_driver import FreshdeskDriver

        return FreshdeskDriver()


def _conforms(connector: FreshdeskConnector) -> Connector:
    """mypy proves here that FreshdeskConnector meets the Connector protocol."""
    return connector


# --------------------------------------------------------------------------- helpers


def _identity(me: Mapping[str, Any]) -> Identity:
    """The API key's agent: its id, and its e-mail as an alias (what ``performer`` holds)."""
    contact = me.get("contact") or {}
    email = str(contact.get("email") or "")
    return Identity(
        str(me["id"]),
        aliases=frozenset({email}) if email else frozenset(),
        label=f"{contact.get('name') or ''} <{email}> (agent {me['id']})".strip(),
    )


def _stamp_of(answer: Any) -> str | None:
    """The ``updated_at`` of a note's or reply's answer: the ticket's new stamp (posting a
    conversation touches the ticket), or None when the answer has none."""
    stamp = answer.get("updated_at") if isinstance(answer, Mapping) else None
    return str(stamp) if stamp else None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_choices(choices: Any) -> dict[int, str]:
    """``{"2": ["Open", "Being Processed"], …}`` (agent label first) or a list of
    ``{"id"|"value", "label"}``: both shapes, since the field's format is not stable."""
    out: dict[int, str] = {}
    if isinstance(choices, Mapping):
        for key, label in choices.items():
            name = label[0] if isinstance(label, list | tuple) and label else label
            if str(key).isdigit():
                out[int(key)] = str(name)
            elif isinstance(label, int):  # {"Open": 2}
                out[label] = str(key)
    elif isinstance(choices, list):
        for item in choices:
            if isinstance(item, Mapping):
                code = item.get("id", item.get("value"))
                if code is not None and str(code).isdigit():
                    out[int(code)] = str(item.get("label") or item.get("name") or code)
    return out


def _removed_tags(prepared: _Write) -> frozenset[str]:
    """The tags (lower case) a write takes off the ticket: those read but not in its body."""
    if "tags" not in prepared.body:
        return frozenset()
    kept = {str(t).lower() for t in prepared.body["tags"]}
    return frozenset(str(t).lower() for t in prepared.raw.get("tags") or ()) - kept


def _succeeded_failed(answer: Mapping[str, Any], ids: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = dict.fromkeys(ids, "unknown")
    for item in answer.get("succeeded") or ():
        out[str(item.get("id") if isinstance(item, Mapping) else item)] = None
    for item in answer.get("failed") or ():
        if isinstance(item, Mapping):
            out[str(item.get("id"))] = (
                _errors_text(item.get("errors") or item.get("error")) or "failed"
            )
        else:
            out[str(item)] = "failed"
    return out


def _job_data(data: Any) -> dict[str, str | None]:
    """Per-ticket entries of a finished job, leniently: ``{"id", "success"|"status", "error"}``.

    Real client code polling ``GET /api/v2/jobs/{id}`` reads ``data[].id``, ``success`` and
    ``error`` (singular) — api-audit.md #15 — so the reason is taken from ``error``, and from
    ``errors`` too in case some answers use the plural.
    """
    out: dict[str, str | None] = {}
    if not isinstance(data, list):
        return out
    for entry in data:
        if not isinstance(entry, Mapping) or entry.get("id") is None:
            continue
        reason = "; ".join(
            text for text in (_errors_text(entry.get(k)) for k in ("error", "errors")) if text
        )
        failed = (
            entry.get("success") is False
            or str(entry.get("status") or "").lower() in ("failed", "failure", "error")
            or bool(reason)
        )
        out[str(entry["id"])] = (reason or "failed") if failed else None
    return out


def _errors_text(errors: Any) -> str:
    """Freshdesk's error(s) as text: a list of ``{field, message}``, one such object, or text."""
    if isinstance(errors, list):
        return "; ".join(_errors_text(e) for e in errors if e)
    if isinstance(errors, Mapping):
        message = errors.get("message") or errors.get("description") or errors.get("code")
        field = errors.get("field")
        if message is None:
            return str(dict(errors)) if errors else ""
        return f"{field}: {message}" if field else str(message)
    return str(errors) if errors else ""
