"""ZendeskConnector: escbridge's connector contract, spoken to the Zendesk Support API.

What is Zendesk's own: one ``PUT /tickets/{id}`` per escalation guarded by ``safe_update`` +
``updated_stamp`` (a 409 is a concurrent edit), ``update_many`` jobs for bulk writes, the
incremental export (admins) or search (agents) for sync, and signed webhooks. The apply loop,
conflict semantics, group cache and the settling of writes whose outcome is unknown come from
``escbridge.connector``; the reference an escalation write carries here is its level marker tag
(written in the same PUT as the note), so a ticket that has it has the whole first PUT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from escbridge.connector import (
    CAP_BULK_UPDATE,
    CAP_EVENT_WEBHOOKS,
    CAP_INCREMENTAL_SYNC,
    CAP_SAFE_UPDATE,
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
    SlidingWindow,
    TicketPage,
    WebhookRequest,
    check_identity,
    poll_job,
)
from escbridge.connector.kit import Identity, landed
from escbridge.errors import (
    ApiError,
    NotFound,
    PermissionDeniedError,
    TicketChanged,
    ValidationError,
)
from escbridge.http import RetryPolicy
from escbridge.model import Actions, LevelMarker, Ticket, TicketEvent
from escbridge_zendesk import webhook
from escbridge_zendesk.client import MAX_BATCH, SEARCH_CAP, UPDATE_BUCKET, ZendeskApi
from escbridge_zendesk.config import ZendeskConfig
from escbridge_zendesk.parse import (
    format_time,
    job_result_outcomes,
    latest_public_comment,
    parse_ticket,
    parse_time,
)

if TYPE_CHECKING:
    from escbridge_zendesk.sandbox_driver import ZendeskDriver

log = logging.getLogger(__name__)

__version__ = "0.2.0"

INCREMENTAL_LAG = timedelta(seconds=60)  # Zendesk leaves out changes of the last minute
GROUP_REFRESH_SECONDS = 60.0
_INC, _SEARCH = "inc:", "search:"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JOB_DONE = ("completed", "failed", "killed")


@dataclass(frozen=True)
class _Write:
    """One escalation ready to go: the ``ticket`` object of its update."""

    ticket: Ticket
    actions: Actions
    body: dict[str, Any]


class ZendeskConnector(BaseConnector[ZendeskConfig, _Write]):
    """Zendesk, spoken in escbridge's normalised vocabulary.

    Construct with the instance's ``ZendeskConfig``; ``runtime`` (or a test's ``session=``,
    ``sleep=``, ``clock=``, ``utcnow=``, ``rng=``) keeps tests off the network and the clock.
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
        runtime: Runtime | None = None,
        policy: RetryPolicy | None = None,
        **test_overrides: Any,
    ) -> None:
        super().__init__(config, instance=instance, runtime=runtime, **test_overrides)
        self.api = ZendeskApi(config, runtime=self.runtime, policy=policy)
        # Incremental exports announce no limit in headers: 10 requests per minute.
        self._incremental_gate = SlidingWindow(
            config.incremental_per_minute, 60.0, self.runtime.clock
        )
        self.groups: GroupDirectory[int] = GroupDirectory(
            self._load_groups,
            instance=instance,
            min_reload=GROUP_REFRESH_SECONDS,
            clock=self.runtime.clock,
            parse_id=int,
        )
        self._sync_mode: str | None = None if config.sync == "auto" else config.sync

    def __repr__(self) -> str:
        return f"ZendeskConnector(instance={self.instance!r}, url={self.config.api_url!r})"

    # ------------------------------------------------------------------ check

    def agent_url(self, ticket_id: str) -> str | None:
        """``https://<subdomain>.zendesk.com/agent/tickets/<id>``; the emulator's in a sandbox."""
        root = self.config.base_url or f"https://{self.config.subdomain}.zendesk.com"
        return f"{root}/agent/tickets/{quote(ticket_id, safe='')}"

    def check(self, groups: Collection[str]) -> CheckReport:
        """Who we are, whether the account answers, and which matrix groups are missing."""
        problems: list[str] = []
        notes: list[str] = []
        how = "oauth_token" if self.config.oauth_token else "email and api_token"
        me = check_identity(
            self.api.me,
            product="Zendesk",
            where=self.config.api_url,
            credentials=how,
            not_found="check the subdomain",
        )
        if isinstance(me, CheckReport):
            return me
        if me.get("id") is None:
            return CheckReport(
                ok=False,
                problems=(
                    "Zendesk answered as the anonymous user: the credentials were not accepted "
                    "(is the token active and the email the token owner's?)",
                ),
            )
        role = str(me.get("role") or "")
        identity = f"{me.get('name') or ''} <{me.get('email') or ''}> (user {me['id']}, {role})"
        if self.identity.known is None:
            self.identity.set(_identity(me))
        writes_as = self.identity.known
        notes.append(f"escbridge writes as {writes_as}; webhooks by this user are its own")
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
        try:
            missing = self.groups.missing(groups)
        except PermissionDeniedError as exc:
            problems.append(f"cannot list groups: {exc.message}")
        return CheckReport.of(identity, problems=problems, missing_groups=missing, notes=notes)

    # ------------------------------------------------------------------ tickets

    def _load_groups(self) -> list[Group[int]]:
        return [
            Group(int(g["id"]), str(g["name"]), active=not g.get("deleted"))
            for g in self.api.groups()
        ]

    def group_id(self, name: str) -> int:
        """The id of a group by name (case-insensitive); refreshed once on a miss."""
        return self.groups.id_of(name)

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        return parse_ticket(raw, instance=self.instance, group_names=self.groups.names())

    def refetch(self, ticket_id: str, known: Ticket) -> Ticket:
        """One GET when the ticket has not changed since ``known`` was read: a new comment
        moves ``updated_at`` (Zendesk's version), so an unchanged version means ``known``'s
        latest comment is still the latest, and List Comments is not called."""
        if not self.latest_comment_needed or known.version is None or not known.latest_comment:
            return self.fetch_ticket(ticket_id)  # nothing known to reuse (e.g. not kept before)
        data = self._show(ticket_id)
        fresh = self._parsed(data, known.latest_comment)
        if fresh.version == known.version:
            return fresh
        return self._parsed(data, self._latest_comment(ticket_id))

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        """One ticket, fresh, with ``latest_comment`` (the event path: webhooks, re-fetches).

        Two GETs: Show Ticket (comments are not part of it) and List Comments, newest first;
        ``latest_comment`` is the newest public comment, internal notes skipped. If the comments
        cannot be read (404/403) the ticket comes back with ``latest_comment`` empty. When no
        rule reads the latest comment (``latest_comment_needed``), one GET: a due ticket's read
        costs one call of the account's budget, not two.
        """
        data = self._show(ticket_id)
        comment = self._latest_comment(ticket_id) if self.latest_comment_needed else ""
        return self._parsed(data, comment)

    def _show(self, ticket_id: str) -> dict[str, Any]:
        """Show Ticket, with its metric set."""
        self.groups.ensure()
        data = self.api.ticket(str(ticket_id), include="metric_sets")
        self.groups.note_tickets([data.get("ticket") or {}], "group_id")  # one created since
        return data

    def _latest_comment(self, ticket_id: str) -> str:
        """The newest public comment ("" when there is none or the comments cannot be read)."""
        try:
            return latest_public_comment(self.api.comments(str(ticket_id)))
        except (NotFound, PermissionDeniedError) as exc:
            log.warning(
                "ticket %s: cannot read its comments (HTTP %s); latest_comment left empty",
                ticket_id,
                exc.status,
            )
            return ""

    def _parsed(self, data: dict[str, Any], comment: str) -> Ticket:
        return parse_ticket(
            data,
            instance=self.instance,
            group_names=self.groups.names(),
            latest_comment=comment,
        )

    # ------------------------------------------------------------------ apply (platform part)

    def _ticket_body(self, ticket: Ticket, actions: Actions) -> dict[str, Any]:
        """The ``ticket`` object of one update: everything in one write.

        Tags: with the ticket's ``updated_at`` as ``updated_stamp`` (safe update), the full tag
        list computed from the fetched tags is safe — had a human changed any tag meanwhile,
        Zendesk answers 409 and we recompute from fresh tags. Without a stamp we send only
        ``additional_tags``/``remove_tags`` (documented for update_many, not for a single PUT:
        ``_write_one`` checks the result and falls back to the Tags API).
        """
        body: dict[str, Any] = {}
        if actions.group:
            body["group_id"] = self.group_id(actions.group)
        if actions.priority is not None and actions.priority > ticket.priority:
            body["priority"] = actions.priority.label  # never lowered
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

    def _prepare(self, ticket: Ticket, actions: Actions) -> _Write | ApplyResult:
        """No read needed: ``safe_update`` makes Zendesk itself refuse a stale write (409).

        One PUT carries the whole escalation, so a ticket that already has the target level's
        marker has all of it (a retry after a crash, a lost answer): nothing is written again
        but a customer update that needed a second PUT (``_landed_result``).
        """
        if actions.level and ticket.level == actions.level.lower():
            return self._landed_result(ticket, actions)
        body = self._ticket_body(ticket, actions)
        if not body:
            return ApplyResult(
                ticket.id, ok=True, skipped=True, actions=actions, version=ticket.version
            )
        return _Write(ticket, actions, body)

    def _write_one(self, prepared: _Write) -> ApplyResult:
        """One ``PUT /tickets/{id}``; a ``customer_update`` next to a note needs a second PUT
        (one comment per update)."""
        ticket, actions, body = prepared.ticket, prepared.actions, prepared.body
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
        return ApplyResult(ticket.id, ok=True, actions=actions, version=version)

    def _recheck(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        """After a write whose outcome is unknown: ``_prepare`` does not read, so read here.

        The level marker there: the PUT landed (recorded, ``recovered``). Else a ticket that
        changed since ``ticket`` was read is a concurrent edit (``TicketChanged``, re-decided);
        an unchanged one never got the write, which is made now (``safe_update`` with the old
        stamp still guards it: were the first PUT to land after all, this one gets a 409).
        """
        fresh = self.fetch_ticket(ticket.id)
        if landed(fresh, actions):
            log.info("ticket %s: the escalation whose answer was lost had landed", ticket.id)
            return self._landed_result(fresh, actions)
        if ticket.version and fresh.version != ticket.version:
            raise TicketChanged(
                f"ticket {ticket.id} changed since it was read ({ticket.version} -> "
                f"{fresh.version})",
                current=fresh,
                method="PUT",
                url=f"/tickets/{ticket.id}",
            )
        return self._attempt(ticket, actions)

    def _landed_result(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        """The escalation's PUT is on ``ticket``; a customer update that goes in a second PUT
        (next to a note) is sent now unless it follows the note already."""
        version = ticket.version
        if (
            actions.note
            and actions.customer_update
            and not self._reply_sent(ticket.id, actions.note, actions.customer_update)
        ):
            public: dict[str, Any] = {"comment": {"body": actions.customer_update, "public": True}}
            if version:
                public |= {"safe_update": True, "updated_stamp": version}
            data = self.api.update_ticket(ticket.id, public)
            version = (data.get("ticket") or {}).get("updated_at") or version
        return ApplyResult(ticket.id, ok=True, actions=actions, version=version, recovered=True)

    def _reply_sent(self, ticket_id: str, note: str, reply: str) -> bool:
        """Whether a public comment with ``reply`` is newer than the latest note ``note``."""
        wanted, ours = _words(reply)[:200], _words(note)[:200]
        for comment in self.api.comments(ticket_id):  # newest first
            body = _words(str(comment.get("plain_body") or comment.get("body") or ""))
            if comment.get("public") and wanted and wanted in body:
                return True
            if not comment.get("public") and ours and ours in body:
                return False  # reached our note: nothing public after it
        return False

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

    def _bulk_key(self, prepared: _Write) -> str:
        """Every update fits one ``update_many`` batch: each ticket carries its own body."""
        return "update_many"

    def _bulk_size(self) -> int:
        """≤100 per job, sized to the Update Ticket budget the last response announced."""
        rate = self.api.client.rate_limit(UPDATE_BUCKET)
        size = MAX_BATCH
        if rate is not None:
            if rate.limit:
                size = min(size, rate.limit)
            if rate.remaining is not None and 0 < rate.remaining < size:
                size = rate.remaining
        return max(1, size)

    def _write_bulk(self, batch: Sequence[_Write]) -> Sequence[ApplyResult]:
        return self._submit_bulk(batch)()

    def _submit_bulk(self, batch: Sequence[_Write]) -> Callable[[], Sequence[ApplyResult]]:
        """``PUT /tickets/update_many`` in the batch form; the job is polled when collected.

        Each ticket carries its own ``safe_update`` + ``updated_stamp`` (Zendesk requires both
        in a batch). Results are mapped back by ticket id, or by ``index`` (position in the
        batch) when an entry has no id; a ticket missing from the results, or a failed job
        without per-item results, is a retryable failure; an ``UpdateConflict`` is a conflict.
        """
        job = self.api.update_many([{"id": int(w.ticket.id), **w.body} for w in batch])
        job_id = job.get("id")
        if not job_id:
            raise ApiError("update_many answered without a job id")
        submitted = self.runtime.clock()
        return lambda: self._job_results(batch, str(job_id), job, submitted)

    def _job_results(
        self, batch: Sequence[_Write], job_id: str, job: Mapping[str, Any], submitted: float
    ) -> list[ApplyResult]:
        """Poll the job until done and map its results back to the batch's tickets."""
        poll = poll_job(
            lambda: self.api.job_status(job_id),
            lambda j: str(j.get("status")) in _JOB_DONE,
            first=job,
            submitted_at=submitted,
            timeout=self.config.job_timeout,
            clock=self.runtime.clock,
            sleep=self.runtime.sleep,
            delay=0.1,
            max_delay=self.config.job_poll_max_interval,
        )
        done = poll.job
        if not poll.finished:
            done = {**done, "status": "timeout", "message": "still running; not waited for"}
        status = str(done.get("status") or "")
        why = f"job {job_id} {status or 'unknown'}: {done.get('message') or ''}".strip()
        results = done.get("results")
        # A failed job may still carry per-item results (zendesk-java-client issue #98:
        # status "failed" with results [{"index": 0, "error": ...}]): read them, so tickets
        # that did update are not sent again.
        per_item = status == "completed" or (
            status == "failed" and isinstance(results, list) and bool(results)
        )
        if not per_item:
            # A job still running may yet write: settled (wait, re-read) like a lost answer.
            return [
                ApplyResult(
                    w.ticket.id, ok=False, error=why, retryable=True, unknown=not poll.finished
                )
                for w in batch
            ]
        outcomes = job_result_outcomes(results, [w.ticket.id for w in batch])
        out: list[ApplyResult] = []
        for w in batch:
            outcome = outcomes.get(w.ticket.id)
            if outcome is None:
                # Missing from a failed job's results: it may or may not have been written,
                # so it is settled (re-read, write what is missing) rather than re-sent.
                out.append(
                    ApplyResult(
                        w.ticket.id,
                        ok=False,
                        retryable=True,
                        error=f"ticket missing from the results of job {job_id}"
                        + (f" ({why})" if status != "completed" else ""),
                        unknown=status != "completed",
                    )
                )
                continue
            ok, error, conflict = outcome
            if ok:
                out.append(ApplyResult(w.ticket.id, ok=True, actions=w.actions))
            else:
                out.append(
                    ApplyResult(
                        w.ticket.id,
                        ok=False,
                        error=error,
                        retryable=conflict,
                        conflict=conflict,
                        conflicts=int(conflict),
                    )
                )
        return out

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
        self.groups.ensure()
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
            self._incremental_gate.wait(self.runtime.sleep)
            if after:
                data = self.api.incremental(cursor=after)
            else:
                latest = self.runtime.utcnow() - INCREMENTAL_LAG
                start = min(since or EPOCH, latest)
                try:
                    data = self.api.incremental(start_time=int(start.timestamp()))
                except ValidationError as exc:
                    if "start_time" not in str(exc).lower():
                        raise
                    # "Too recent start_time" (undocumented): step back and try once more.
                    self._incremental_gate.wait(self.runtime.sleep)
                    start = self.runtime.utcnow() - 2 * INCREMENTAL_LAG
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
        self.groups.note_tickets(raws, "group_id")
        out = []
        for raw in raws:
            if raw.get("status") == "deleted":
                continue
            ticket = parse_ticket(
                raw,
                instance=self.instance,
                group_names=self.groups.names(),
                metric_set=by_ticket.get(raw.get("id")),
            )
            if ticket.status.is_open:
                out.append(ticket)
        return out

    # ------------------------------------------------------------------ webhooks

    def verify_request(self, request: WebhookRequest) -> None:
        secret = self.config.webhook_secret
        webhook.verify(
            request.headers,
            request.body,
            secret.get_secret_value() if secret is not None else None,
            now=self.runtime.utcnow(),
            window=timedelta(seconds=self.config.replay_window_seconds),
        )

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        return webhook.parse(request.headers, request.body, instance=self.instance)

    def _whoami(self) -> Identity | None:
        """The API user (``/users/me``); None for the anonymous user (credentials refused)."""
        me = self.api.me()
        return _identity(me) if me.get("id") is not None else None

    def _configured_identity(self) -> Identity | None:
        user = self.config.integration_user_id
        return Identity(str(user), label=f"user {user} (integration_user_id)") if user else None

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


def _identity(me: Mapping[str, Any]) -> Identity:
    """The integration user as events name it: ``current_user.id`` / ``actor_id``."""
    email = str(me.get("email") or "")
    return Identity(
        str(me["id"]),
        label=f"{me.get('name') or ''} <{email}> (user {me['id']})".strip(),
    )


def _words(text: str) -> str:
    return " ".join(text.split()).casefold()


def _tag_changes(actions: Actions) -> tuple[set[str], set[str]]:
    add = {t.lower() for t in actions.tags_add}
    if actions.level:
        add.add(LevelMarker.tag(actions.level))
    remove = {t.lower() for t in actions.tags_remove} - add
    return add, remove


def _conforms(connector: ZendeskConnector) -> Connector:
    """mypy proves here that ZendeskConnector meets the Connector protocol."""
    return connector
