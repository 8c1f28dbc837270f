"""ZohoDeskConnector: Zoho Desk in escbridge's vocabulary (the plugin class).

The level marker (``escbridge.model.LevelMarker``) is a ticket tag ``escbridge_<level>`` by
default (``level_marker: tag``; Desk's tag API, zohodesk-oas v1.0/TicketTag.json), or the custom
field ``level_field`` (``level_marker: field``) on portals that already use one. Rule tags are
added and removed with ``associateTag``/``dissociateTag`` either way.

Writing one escalation (``_prepare`` then ``_write_one``; the loop around them, with its conflict
semantics, is ``escbridge.connector.BaseConnector``'s) is, in this order:

1. re-read the ticket and its tags: the target level's marker already there means an earlier
   attempt got to the end (the marker is the last write), so only a leftover old marker is
   removed; a ``modifiedTime`` or level that moved since the caller read the ticket is a
   concurrent edit (``TicketChanged``);
2. resolve the group name to a team/department (an unknown name fails before any write);
3. the private note — unless a retry finds its own note, recognised by a unique marker;
4. the public reply, when the rule asks for one — unless a retry finds the same text;
5. one PATCH with department, team, assignee and priority (and, with a field marker, the level
   field: then the rule's tags go just before it). If Desk refuses it for good, the note and
   reply just posted are deleted again;
6. with a tag marker: ``associateTag`` with the rule's tags and the marker (the commit point),
   then ``dissociateTag`` with the old marker and the rule's removed tags.

So a crash anywhere leaves either nothing, or comments a retry recognises, or the full
escalation; never a missing or a doubled note. A comment POST, the PATCH or a tag call whose
answer was lost (``OutcomeUnknown``) is not repeated: ``BaseConnector`` waits, then the attempt
runs again, and its re-read finds the note by its marker, the reply by its text, the PATCH and
the tags by the marker, and writes only what is missing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import requests

from escbridge.connector import (
    CAP_BULK_UPDATE,
    CAP_EVENT_WEBHOOKS,
    CAP_INCREMENTAL_SYNC,
    CAP_RESUMABLE_APPLY,
    CAP_SANDBOX,
    ApplyResult,
    BaseConnector,
    CheckReport,
    Connector,
    ConnectorInfo,
    Runtime,
    TicketPage,
    WebhookRequest,
    check_identity,
)
from escbridge.connector.kit import Identity
from escbridge.errors import (
    ApiError,
    AuthError,
    NotFound,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimited,
    TicketChanged,
    TransientError,
    UnknownGroupError,
    ValidationError,
)
from escbridge.model import Actions, LevelMarker, Ticket, TicketEvent
from escbridge_zohodesk.client import TAGS_PER_CALL, UPDATE_MANY_MAX, DeskClient, valid_tag
from escbridge_zohodesk.config import ZohoDeskConfig
from escbridge_zohodesk.directory import Directory, Route
from escbridge_zohodesk.hosts import DATA_CENTRES
from escbridge_zohodesk.oauth import TokenManager
from escbridge_zohodesk.parse import (
    PriorityMap,
    format_time,
    parse_ticket,
    parse_time,
    tag_names,
)
from escbridge_zohodesk.token_cache import token_cache_for
from escbridge_zohodesk.webhook import JwksCache, WebhookVerifier, parse_events

if TYPE_CHECKING:
    from escbridge_zohodesk.sandbox_driver import ZohoDeskDriver

log = logging.getLogger(__name__)

__version__ = "0.2.0"

# How a PATCH clears the team (a department-only destination). zohodesk-oas v1.0/Ticket.json
# types ``updateTicketRequest.teamId`` as string/integer with pattern ``([0-9]*|null|undefined)``:
# the string "null" is allowed, JSON null is not (api-audit.md #3). That is UNCONFIRMED against a
# real account, so ``_patch`` sends the string first, as the published schema says, and retries
# once with JSON null when Desk refuses the teamId (what escbridge sent before; if the schema is
# wrong, that is the other form a client could mean).
TEAM_NONE = "null"
SEARCH_PAGE = 100  # /tickets/search ``limit`` is 1..100 (zohodesk-oas v1.0/Search.json)
# /tickets/search ``from`` is 0..999 (zohodesk-oas v1.0/Search.json; api-audit.md #1): from=900
# with limit=100 is the last page, so at most 1,000 hits of one window can be read.
SEARCH_MAX_FROM = 999
# A page with at least this many items whose tags are unknown asks search which have any (one
# search costs about as many credits as three reads) rather than reading each one's tags.
TAG_SEARCH_MIN = 3
# What deciding on a ticket reads from it besides ``cf`` (parse.parse_ticket). zohodesk-oas
# v1.0/Search.json's ``searchTicketResponseFields`` requires every one of them, so a search
# item is used as it is; one lacking any (a list view has no ``cf``, ``description``, ``email``)
# is read again in full rather than decided on with a field missing. Not ``isResponseOverdue``:
# search items never carry it (the ticket's ``custom_fields`` then lack ``is_response_overdue``).
DECIDING_KEYS = (
    "id", "subject", "description", "status", "statusType", "priority", "channel",
    "departmentId", "teamId", "assigneeId", "contactId", "email", "accountId", "createdTime",
    "modifiedTime", "dueDate", "customerResponseTime", "isOverDue", "isEscalated", "cf",
)  # fmt: skip
MIN_WINDOW = timedelta(seconds=1)  # Desk's times are whole seconds: a window cannot be split finer
NOTE_LIMIT = 32000
PROBE_TAG = "escbridge_scope_probe"  # what `check` removes from ticket 0 to probe a scope
SAME_MOMENT = timedelta(seconds=2)

# Scope -> what escbridge needs it for (shown by `escbridge check` when missing).
REQUIRED_SCOPES = {
    "Desk.tickets.READ": "read tickets and their comments",
    "Desk.tickets.UPDATE": "reassign, raise priority, add the handover note",
    "Desk.tickets.CREATE": "add and remove tags (POST /tickets/{id}/associateTag, "
    "dissociateTag): the level marker and the rules' tags",
    "Desk.search.READ": "the scheduled sync (GET /tickets/search)",
    "Desk.basic.READ": "resolve team and department names",
    "Desk.settings.READ": "check the level field and the priority values",
}


def scope_granted(scope: str, granted: Collection[str]) -> bool:
    """``Desk.tickets.READ`` is granted by itself or by ``Desk.tickets.ALL`` (any case)."""
    have = {s.lower() for s in granted}
    family = scope.rsplit(".", 1)[0].lower()
    return scope.lower() in have or f"{family}.all" in have or "desk.all" in have


@dataclass
class _Prepared:
    """One escalation after the re-read: what remains to be written."""

    ticket: Ticket
    actions: Actions
    raw: dict[str, Any]
    fresh: Ticket
    route: Route | None
    body: dict[str, Any]
    tags_add: list[str] = field(default_factory=list)  # to associate; a tag marker comes last
    tags_remove: list[str] = field(default_factory=list)  # to dissociate, as Desk spells them
    recovered: bool = False  # the escalation had landed: only an old marker is left to remove
    changed: bool = False  # a field of the ticket was written (PATCH or updateMany)
    posted: list[str] = field(default_factory=list)  # comment ids written by this attempt


class ZohoDeskConnector(BaseConnector[ZohoDeskConfig, _Prepared]):
    """Zoho Desk, spoken in escbridge's normalised vocabulary.

    Construct with the instance's ``ZohoDeskConfig``; ``runtime`` (or a test's ``session=``,
    ``sleep=``, ``clock=``, ``utcnow=``, ``wallclock=``) keeps tests off the network and the
    clock; ``token_session``/``jwks_session`` are the sessions for Zoho Accounts and the JWKS.
    """

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="zohodesk",
        version=__version__,
        display_name="Zoho Desk",
        capabilities=frozenset(
            {
                CAP_BULK_UPDATE,
                CAP_EVENT_WEBHOOKS,
                CAP_INCREMENTAL_SYNC,
                CAP_RESUMABLE_APPLY,  # a marked ticket: nothing is missing, nothing is rewritten
                CAP_SANDBOX,
            }
        ),
        signature_scheme="RS256 JWT (X-ZDesk-JWT) + URL secret",
        config_model=ZohoDeskConfig,
    )

    def __init__(
        self,
        config: ZohoDeskConfig,
        *,
        instance: str = "default",
        runtime: Runtime | None = None,
        token_session: requests.Session | None = None,
        jwks_session: requests.Session | None = None,
        **test_overrides: Any,
    ) -> None:
        super().__init__(config, instance=instance, runtime=runtime, **test_overrides)
        self.bulk_min_batch = config.bulk_min_batch
        clock = self.runtime.clock
        self.tokens = TokenManager(
            data_centre=config.data_centre,
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            refresh_token=config.refresh_token.get_secret_value(),
            pairs=config.host_pairs,
            session=token_session,
            clock=clock,
            sleep=self.runtime.sleep,
            timeout=(config.connect_timeout, config.read_timeout),
            cache=token_cache_for(config, instance, self.runtime),
        )
        self.client = DeskClient(config, self.tokens, runtime=self.runtime)
        self.priorities = PriorityMap(config.priority_map)
        self.directory = Directory(
            self.client.teams, self.client.departments, instance=instance, clock=clock
        )
        jwks_urls = [config.jwks_url_for(p) for p in config.host_pairs]
        self.jwks = JwksCache(
            list(dict.fromkeys(jwks_urls)),
            session=jwks_session,
            timeout=config.jwks_timeout,
            ttl=config.jwks_cache_seconds,
            clock=clock,
            instance=instance,
        )
        token = config.webhook_token.get_secret_value() if config.webhook_token else None
        self.verifier = WebhookVerifier(
            org_id=config.org_id,
            webhook_ids=config.webhook_ids,
            url_token=token,
            jwks=self.jwks,
            leeway=config.jwt_leeway_seconds,
            wallclock=self.runtime.wallclock,
        )

    def __repr__(self) -> str:
        return f"ZohoDeskConnector({self.instance!r}, org {self.config.org_id})"

    @property
    def agent_id(self) -> str | None:
        """The agent escbridge writes as: configured, else learned (``/myinfo``, in the
        background, or from the answer to its own update)."""
        who = self.identity.known
        return who.id if who is not None else None

    def _configured_identity(self) -> Identity | None:
        agent = self.config.agent_id
        return Identity(agent) if agent else None

    def _whoami(self) -> Identity | None:
        """The agent the OAuth token acts as (``GET /myinfo``; an empty answer: unknown)."""
        me = self.client.myinfo()
        if me.get("id") in (None, ""):
            return None
        email = str(me.get("emailId") or "")
        name = " ".join(str(me.get(k) or "") for k in ("firstName", "lastName")).strip()
        return Identity(
            str(me["id"]),
            aliases=frozenset({email}) if email else frozenset(),
            label=f"{name} <{email}>".strip() if email else name,
        )

    def learn_identity_in_background(self) -> None:
        """At a receiver's start: who escbridge writes as, and Desk's webhook signing keys
        (JWKS), both fetched in the background so that no delivery waits on Desk."""
        super().learn_identity_in_background()
        self.jwks.start()

    def secret_values(self) -> list[str]:
        """The configured secrets and the live access token."""
        return [*self.config.secret_values(), *self.tokens.secret_values()]

    # -- reading -------------------------------------------------------------------------------

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        """Pure: names of teams/departments come from the cache when the JSON lacks them;
        ``tags`` are those ``_with_tags`` put in."""
        return parse_ticket(
            raw,
            instance=self.instance,
            priorities=self.priorities,
            status_map=self.config.status_map,
            level_field=self.config.level_field,
            team_names=self.directory.team_names(),
            department_names=self.directory.department_names(),
            tags_first=self._tag_marker,
        )

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        return self.parse_ticket(self._read(ticket_id))

    @property
    def _tag_marker(self) -> bool:
        """Whether the level marker is a tag (else the custom field ``level_field``)."""
        return self.config.marker_field is None

    def _read(self, ticket_id: str) -> dict[str, Any]:
        """The ticket's JSON with its ``tags``: Desk's ticket GET has only ``tagCount``."""
        return self._with_tags(self.client.ticket(ticket_id))

    def _with_tags(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` plus ``tags`` (names) from ``GET /tickets/{id}/tags`` — skipped when its
        ``tagCount`` says there are none, which saves a call (and a credit) per ticket."""
        count = raw.get("tagCount")
        try:
            none = count is not None and int(str(count)) == 0
        except ValueError:
            none = False
        return {**raw, "tags": [] if none else self.client.tags(str(raw["id"]))}

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets modified since the cursor, via /tickets/search ``modifiedTimeRange``.

        The range from the cursor (less ``sync_overlap_seconds``, for Desk's search index lag)
        to now is cut into windows small enough that none reaches the search result cap: a
        window whose ``count`` exceeds it is halved first. A page's cursor is the start of its
        window until the window is complete, so stopping anywhere (the day's credits spent:
        ``RateLimited`` with ``resume_at``) loses nothing: the next run starts again from there.
        """
        now = self.runtime.utcnow()
        if cursor:
            start = _parse_cursor(cursor) - timedelta(seconds=self.config.sync_overlap_seconds)
        elif since is not None:
            start = since
        else:
            start = now - timedelta(days=self.config.sync_start_days)
        start = min(start, now)
        pending: list[tuple[datetime, datetime]] = [(start, now)]
        seen: set[tuple[str, str | None]] = set()  # windows share their boundary instant
        while pending:
            lo, hi = pending.pop(0)
            halves = yield from self._scan_window(lo, hi, last=not pending, seen=seen)
            if halves:
                pending[:0] = halves

    def _scan_window(
        self, lo: datetime, hi: datetime, *, last: bool, seen: set[tuple[str, str | None]]
    ) -> Generator[TicketPage, None, list[tuple[datetime, datetime]] | None]:
        """Pages of one window; returns the two halves instead when the window is too big."""
        # never more than Desk's from-limit allows, whatever the (validated) setting says
        cap = min(self.config.search_result_cap, SEARCH_MAX_FROM + 1)
        splittable = hi - lo > MIN_WINDOW
        offset = 0
        while True:
            self.client.ensure_credits(self.config.credit_reserve)
            params = {
                "modifiedTimeRange": f"{format_time(lo)},{format_time(hi)}",
                "sortBy": "modifiedTime",
                "from": offset,
                "limit": SEARCH_PAGE,
            }
            try:
                items, count = self.client.search(params)
            except ValidationError as exc:
                if offset > 0 and splittable:  # the real cap is lower than configured
                    log.info("zohodesk: search refused from=%s (%s); splitting", offset, exc.code)
                    return _halves(lo, hi)
                raise
            if offset == 0 and count is not None and count > cap:
                if splittable:
                    return _halves(lo, hi)
                log.warning(
                    "zohodesk: %s tickets were modified within %s; only the first %s can be read",
                    count,
                    format_time(lo),
                    cap,
                )
            offset += len(items)
            complete = len(items) < SEARCH_PAGE or (count is not None and offset >= count)
            if not complete and (offset + SEARCH_PAGE > cap or offset > SEARCH_MAX_FROM):
                if splittable and count is None:
                    return _halves(lo, hi)
                complete = True
            tickets = []
            for ticket in self._open_tickets(items):
                if (ticket.id, ticket.version) not in seen:
                    seen.add((ticket.id, ticket.version))
                    tickets.append(ticket)
            if complete:
                yield TicketPage(tickets, format_time(hi), last)
                return None
            yield TicketPage(tickets, format_time(lo), False)

    def _open_tickets(self, items: Sequence[Mapping[str, Any]]) -> list[Ticket]:
        """Search items as Tickets, with their tags. An item as Search.json describes it is
        used as it is (only its tags are read: search items carry none); one without ``cf`` or
        another of ``DECIDING_KEYS`` (Desk's list view), or without the level field when that
        is the marker, is read again in full: deciding on a ticket whose level or fields are
        unknown could escalate it twice, or wrongly."""
        if items and not self.directory.loaded:
            self.directory.refresh()
        out = []
        items = [i for i in items if str(i.get("statusType") or "").lower() != "closed"]
        untagged = self._untagged([i for i in items if self._complete(i)])
        for item in items:
            ticket: Ticket | None = None
            try:
                if self._complete(item):
                    none = {"tagCount": "0"} if str(item.get("id")) in untagged else {}
                    try:
                        ticket = self.parse_ticket(self._with_tags({**item, **none}))
                    except (ValueError, KeyError):
                        ticket = None
                if ticket is None:
                    ticket = self.fetch_ticket(str(item["id"]))
            except NotFound:
                continue
            if ticket.status.is_open:
                out.append(ticket)
        return out

    def _complete(self, item: Mapping[str, Any]) -> bool:
        """Whether a search item has the fields (``DECIDING_KEYS``, and the level field when
        that is the marker) to decide on, so that only its tags need reading."""
        if any(key not in item for key in DECIDING_KEYS):
            return False
        cf, marker_field = item["cf"], self.config.marker_field
        return isinstance(cf, Mapping) and (marker_field is None or marker_field in cf)

    def _untagged(self, items: Sequence[Mapping[str, Any]]) -> set[str]:
        """Of complete search items that do not carry ``tagCount``, the ids of those without
        tags: one search with Search.json's ``tag`` filter (``${NotEmpty}``) and ``id``
        list for the page, instead of a ``GET /tickets/{id}/tags`` for each. A refusal costs
        only that search: every item's tags are then read one by one. A ticket tagged between
        the two searches is seen without tags here, and with them by ``_prepare``, which reads
        the tags again before any write (a level that moved is a concurrent edit)."""
        ids = [str(i["id"]) for i in items if "tagCount" not in i and i.get("id")]
        if len(ids) < TAG_SEARCH_MIN:
            return set()
        try:
            found, _ = self.client.search(
                {"id": ",".join(ids), "tag": "${NotEmpty}", "limit": SEARCH_PAGE}
            )
        except ValidationError as exc:
            log.info("zohodesk: the tag search was refused (%s); reading tags per ticket", exc.code)
            return set()
        return set(ids) - {str(i.get("id")) for i in found}

    # -- writing (the platform's part of BaseConnector's apply) ------------------------------------

    def _prepare(self, ticket: Ticket, actions: Actions) -> _Prepared | ApplyResult:
        raw = self._read(ticket.id)
        fresh = self.parse_ticket(raw)
        if self._already_applied(fresh, actions):
            leftover = self._tags_to_remove(raw, fresh, actions)
            if not leftover:
                return ApplyResult(
                    ticket.id, ok=True, actions=actions, version=fresh.version, recovered=True
                )
            return _Prepared(
                ticket, actions, raw, fresh, None, {}, tags_remove=leftover, recovered=True
            )
        moved = ticket.version is not None and fresh.version != ticket.version
        if moved or fresh.level != ticket.level:  # a tag change need not move modifiedTime
            raise TicketChanged(
                f"ticket {ticket.id} changed since it was read (modifiedTime {ticket.version} "
                f"-> {fresh.version}, level {ticket.level} -> {fresh.level})",
                current=fresh,
                status=None,
                code="MODIFIED",
            )
        marker = LevelMarker.tag(actions.level) if actions.level else None
        if self._tag_marker and marker and not valid_tag(marker):
            return ApplyResult(
                ticket.id,
                ok=False,
                error=f"the level marker {marker!r} is not a tag Zoho Desk takes (3 to 50 "
                "letters, digits, _ . - + %): shorten the level id, or use level_marker: field",
                retryable=False,
            )
        route = self.directory.resolve(actions.group) if actions.group else None
        body = self._patch_body(raw, fresh, actions, route)
        return _Prepared(
            ticket,
            actions,
            raw,
            fresh,
            route,
            body,
            tags_add=self._tags_to_add(fresh, actions),
            tags_remove=self._tags_to_remove(raw, fresh, actions),
        )

    def _refused(self, ticket_id: str, exc: Exception) -> ApplyResult | None:
        """Per ticket: every API error but the two that concern every ticket (credentials:
        ``AuthError``; the day's credits: ``RateLimited`` with ``resume_at``)."""
        if isinstance(exc, UnknownGroupError):
            return ApplyResult(ticket_id, ok=False, error=str(exc), retryable=False)
        if isinstance(exc, ApiError) and not _concerns_every_ticket(exc):
            return _failed(ticket_id, exc)
        return None

    def _already_applied(self, fresh: Ticket, actions: Actions) -> bool:
        """The marker is written last: carrying the target level's means all was written (a
        tag marker counts even beside an old one whose removal a crash cut off)."""
        if not actions.level:
            return False
        if self._tag_marker:
            return LevelMarker.tag(actions.level) in fresh.tags
        return fresh.level == actions.level

    def _patch_body(
        self, raw: Mapping[str, Any], fresh: Ticket, actions: Actions, route: Route | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if route is not None:
            if str(raw.get("departmentId") or "") != route.department_id:
                body["departmentId"] = route.department_id
            current_team = raw.get("teamId")
            if (str(current_team) if current_team else None) != route.team_id:
                body["teamId"] = route.team_id if route.team_id else TEAM_NONE
        if actions.unassign and raw.get("assigneeId"):
            body["assigneeId"] = None
        if actions.priority is not None and actions.priority > fresh.priority:
            value = self.priorities.write(actions.priority)
            if str(raw.get("priority") or "") != value:
                body["priority"] = value
        marker_field = self.config.marker_field
        if marker_field and actions.level:
            body["cf"] = {marker_field: LevelMarker.tag(actions.level)}
        return body

    def _tags_to_add(self, fresh: Ticket, actions: Actions) -> list[str]:
        """The tags to add that the ticket lacks; with a tag marker the target level's marker
        comes last (it lands in the last ``associateTag`` call), with a field marker it is not
        written (the field carries the level). Names Desk would refuse (3 to 50 characters,
        TicketTag.json) are left out with a warning rather than failing the escalation."""
        marker = LevelMarker.tag(actions.level) if actions.level else None
        wanted = [
            t for t in dict.fromkeys(t.strip() for t in actions.tags_add) if t and t != marker
        ]
        refused = [t for t in wanted if not valid_tag(t)]
        if refused:
            log.warning(
                "zohodesk: ticket %s: tags %s not written: Zoho Desk takes 3 to 50 letters, "
                "digits, spaces and _ . - + %%",
                fresh.id,
                refused,
            )
        if self._tag_marker and marker:
            wanted.append(marker)
        return [t for t in wanted if valid_tag(t) and t.lower() not in fresh.tags]

    def _tags_to_remove(self, raw: Mapping[str, Any], fresh: Ticket, actions: Actions) -> list[str]:
        """The tags to remove (the old marker among them) that the ticket has, spelt as Desk
        lists them; never one this escalation adds."""
        drop = {t.strip().lower() for t in actions.tags_remove}
        drop -= {t.strip().lower() for t in actions.tags_add}
        drop.discard(LevelMarker.tag(actions.level) if actions.level else "")
        spelt = {name.lower(): name for name in tag_names(raw)}
        return [spelt[t] for t in sorted(drop) if t in spelt and valid_tag(spelt[t])]

    # -- the single path -------------------------------------------------------------------------

    def _write_one(self, prepared: _Prepared) -> ApplyResult:
        return self._write(prepared, comments_posted=False)

    def _write(self, p: _Prepared, *, comments_posted: bool) -> ApplyResult:
        try:
            if not comments_posted and not p.recovered:  # landed: its comments are there
                self._post_comments(p)
            if not self._tag_marker:
                self._write_tags(p)  # before the PATCH, which carries the level field
            updated = self._patch(p) if p.body else p.raw
            if p.body:  # the answer to our own PATCH: its modifier is the integration agent
                p.changed = True
                self._learn_agent(updated.get("modifiedBy"))
            tagged_last = bool(p.tags_add or p.tags_remove)
            self._write_tags(p)  # a tag marker: the commit point
        except OutcomeUnknown:
            raise  # BaseConnector settles it: wait, re-read, write only what is missing
        except ApiError as exc:
            if _concerns_every_ticket(exc):
                raise
            if not _retryable(exc) and not p.changed:
                self._undo_comments(p)
            return _failed(p.ticket.id, exc)
        return ApplyResult(
            p.ticket.id,
            ok=True,
            actions=p.actions,
            version=self._version_after(p, updated if p.body else None, tagged_last),
            recovered=p.recovered,
        )

    def _version_after(
        self, p: _Prepared, patched: Mapping[str, Any] | None, tagged_last: bool
    ) -> str | None:
        """The ticket's ``modifiedTime`` as this write left it, for the worker to tell the
        echo of escbridge's write from a person's later change (``ApplyResult.version``).

        The PATCH's answer carries it when the PATCH was the last call. A tag call's answer
        carries none, and whether it moves ``modifiedTime`` is undocumented (so is whether a
        comment does); then one read of the ticket, believed only when its ``modifiedBy`` is
        the agent escbridge writes as — a person's change in between is never taken for ours
        (None then: the echo is decided on again, and the level marker stops a second write).
        Nothing written since the read of ``_prepare``: that read's version.
        """
        if patched is not None and not tagged_last:
            stamp = patched.get("modifiedTime")
            return str(stamp) if stamp else None
        if patched is None and not tagged_last and not p.posted:
            return p.fresh.version
        try:
            raw = self.client.ticket(p.ticket.id)
        except ApiError as exc:  # the escalation landed; only the echo check loses
            log.info("zohodesk: ticket %s: version after the write unknown (%s)", p.ticket.id, exc)
            return None
        who, stamp = self.identity.known, raw.get("modifiedTime")
        if who is None or not stamp or not who.matches(str(raw.get("modifiedBy") or "")):
            return None
        return str(stamp)

    def _write_tags(self, p: _Prepared) -> None:
        """``associateTag`` (at most 51 names a call; a tag marker is in the last), then
        ``dissociateTag``. What was written leaves the lists, so a later step of the same
        attempt (the bulk path's fallback) does not send it again."""
        while p.tags_add:
            chunk = p.tags_add[:TAGS_PER_CALL]
            self.client.associate_tags(p.ticket.id, chunk)
            del p.tags_add[: len(chunk)]
        while p.tags_remove:
            chunk = p.tags_remove[:TAGS_PER_CALL]
            self.client.dissociate_tags(p.ticket.id, chunk)
            del p.tags_remove[: len(chunk)]

    def _recheck(self, ticket: Ticket, actions: Actions) -> ApplyResult:
        """The attempt again after a lost answer (``BaseConnector``), knowing that Desk moves
        ``modifiedTime`` for a comment and for the PATCH: what this escalation wrote before the
        lost answer would look like a concurrent edit. When the ticket changed only as this
        escalation changes it (its comments, group, priority, assignee, tags), the attempt goes
        on from the fresh ticket, which writes only what is missing (with a tag marker: the
        tags after a PATCH whose answer, or an ``associateTag`` whose answer, was lost)."""
        try:
            return self._attempt(ticket, actions)
        except TicketChanged as exc:
            fresh = exc.current
            if isinstance(fresh, Ticket) and self._only_our_changes(ticket, fresh, actions):
                return self._attempt(fresh, actions)
            raise

    def _only_our_changes(self, ticket: Ticket, fresh: Ticket, actions: Actions) -> bool:
        """Whether ``fresh`` differs from ``ticket`` only by what this escalation writes."""
        if fresh.status != ticket.status or fresh.level != ticket.level:
            return False
        changed = False
        if fresh.group != ticket.group:
            if (fresh.group or "").casefold() != (self._group_name(actions) or "").casefold():
                return False
            changed = True
        if fresh.priority != ticket.priority:
            if actions.priority is None or fresh.priority != self.priorities.read(
                self.priorities.write(actions.priority)
            ):
                return False
            changed = True
        if fresh.assignee != ticket.assignee:
            if not actions.unassign or fresh.assignee is not None:
                return False
            changed = True
        if fresh.tags != ticket.tags:
            added, removed = fresh.tags - ticket.tags, ticket.tags - fresh.tags
            if not added <= {t.strip().lower() for t in actions.tags_add}:
                return False
            if not removed <= {t.strip().lower() for t in actions.tags_remove}:
                return False
            changed = True
        marker = self._marker(ticket.id, fresh.level, actions)
        reply = (actions.customer_update or "").strip()[:NOTE_LIMIT]
        ours = 0
        for comment in self.client.comments(ticket.id):  # newest first
            try:
                at = parse_time(comment.get("commentedTime"))
            except ValueError:
                return False
            if at is None or at < ticket.updated_at:
                break
            content = str(comment.get("content") or "")
            if marker not in content and not (reply and content.strip() == reply):
                return False
            ours += 1
        return ours > 0 or changed

    def _group_name(self, actions: Actions) -> str | None:
        """The team's (else the department's) name a ticket routed to ``actions.group`` shows."""
        if not actions.group:
            return None
        try:
            route = self.directory.resolve(actions.group)
        except UnknownGroupError:
            return None
        if route.team_id:
            return self.directory.team_names().get(route.team_id)
        return self.directory.department_names().get(route.department_id)

    def _patch(self, p: _Prepared) -> dict[str, Any]:
        """PATCH the ticket, with the fallbacks for what the reference could not confirm.

        - PATCH may not move departments: the documented ``/move`` endpoint does, then the
          rest is PATCHed;
        - JSON null may not unassign: the schema's pattern names the string ``"null"``;
        - the string ``"null"`` may not clear the team after all: JSON null is tried once
          (see ``TEAM_NONE``).
        """
        ticket_id, body = p.ticket.id, dict(p.body)
        for _ in range(4):
            if not body:
                return self.client.ticket(ticket_id)
            try:
                return self.client.update_ticket(ticket_id, body)
            except ValidationError as exc:
                rejected = {f.field for f in exc.fields}
                team_refused = (
                    "teamId" in rejected and "departmentId" not in rejected
                    if rejected
                    else "departmentId" not in body  # an unnamed refusal: the team is the suspect
                )
                if body.get("teamId") == TEAM_NONE and team_refused:
                    log.info('zohodesk: PATCH refused teamId "null"; clearing the team with null')
                    body["teamId"] = None
                elif "departmentId" in body and (
                    not rejected or rejected & {"departmentId", "teamId"}
                ):
                    log.info("zohodesk: PATCH refused the department change; using /move")
                    self.client.move_ticket(ticket_id, body.pop("departmentId"))
                elif (
                    "assigneeId" in rejected and "assigneeId" in body and body["assigneeId"] is None
                ):
                    body["assigneeId"] = "null"
                else:
                    raise
        return self.client.update_ticket(ticket_id, body)

    # -- comments: the note and the reply ---------------------------------------------------------

    def note_marker(self, p: _Prepared) -> str:
        """A marker unique to this escalation of this ticket (from-level, destination)."""
        return self._marker(p.ticket.id, p.fresh.level, p.actions)

    def _marker(self, ticket_id: str, from_level: str | None, actions: Actions) -> str:
        to = actions.level or actions.group or "?"
        seed = f"{self.instance}|{ticket_id}|{from_level or ''}|{to}"
        digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
        return f"[escbridge {to} ref:{digest}]"

    def _post_comments(self, p: _Prepared) -> None:
        note = p.actions.note
        reply = p.actions.customer_update
        if not note and not reply:
            return
        marker = self.note_marker(p)
        recent = self._recent_comments(p)
        if note and not any(marker in str(c.get("content") or "") for c in recent):
            text = note.strip()[: NOTE_LIMIT - len(marker) - 4] + "\n\n" + marker
            posted = self.client.add_comment(p.ticket.id, text, public=False)
            self._learn_agent(posted.get("commenterId"))
            if posted.get("id"):
                p.posted.append(str(posted["id"]))
        if reply:
            wanted = reply.strip()[:NOTE_LIMIT]
            if not any(
                c.get("isPublic") and str(c.get("content") or "").strip() == wanted for c in recent
            ):
                posted = self.client.add_comment(p.ticket.id, wanted, public=True)
                if posted.get("id"):
                    p.posted.append(str(posted["id"]))

    def _recent_comments(self, p: _Prepared) -> list[dict[str, Any]]:
        """Comments a crashed attempt of this escalation could have written.

        Those within ``note_dedupe_minutes`` of now, or not older than the ticket's last
        change (nothing happened to the ticket since: a retry of ours, however late). An older
        note with the same marker belongs to an earlier escalation that a person undid — unless
        the ticket already sits in the target team without the level marker: the writes after
        the note (``updateMany`` calls or the PATCH, the marker last) were stopped in between,
        and every comment is looked at, however late the retry.
        """
        if str(p.raw.get("commentCount", "1")) == "0":
            return []
        resumed = self._bulk_partly_written(p)
        window_start = self.runtime.utcnow() - timedelta(minutes=self.config.note_dedupe_minutes)
        modified = p.fresh.updated_at - SAME_MOMENT
        out = []
        for comment in self.client.comments(p.ticket.id):
            try:
                at = parse_time(comment.get("commentedTime"))
            except ValueError:
                at = None
            if at is None:
                continue
            if resumed or at >= window_start or at >= modified:
                out.append(comment)
            elif at < min(window_start, modified):
                break  # newest first: the rest are older still
        return out

    def _bulk_partly_written(self, p: _Prepared) -> bool:
        """The ticket is in the target team but lacks the target level: what a bulk write of
        this escalation leaves when it stops before its marker (the last ``updateMany``, or
        the ``associateTag`` after them)."""
        route = p.route
        return bool(
            route is not None
            and route.team_id
            and p.actions.level
            and p.fresh.level != p.actions.level
            and str(p.raw.get("teamId") or "") == route.team_id
            and str(p.raw.get("departmentId") or "") == route.department_id
        )

    def _undo_comments(self, p: _Prepared) -> None:
        """Desk refused the update for good: a note saying "escalated" would be false."""
        for comment_id in p.posted:
            try:
                self.client.delete_comment(p.ticket.id, comment_id)
            except ApiError as exc:
                log.warning(
                    "zohodesk: could not delete comment %s of ticket %s after a failed update: %s",
                    comment_id,
                    p.ticket.id,
                    exc,
                )
        p.posted.clear()

    # -- the bulk path ----------------------------------------------------------------------------

    def _bulk_key(self, prepared: _Prepared) -> tuple[Any, ...] | None:
        """Changes updateMany can make (team, priority, level field), as a grouping key.

        Department moves and unassigning go one by one: whether updateMany does them (and
        takes a null) is not documented.
        """
        body = prepared.body
        if not body or "departmentId" in body or "assigneeId" in body:
            return None
        if "teamId" in body and body["teamId"] in (None, TEAM_NONE):
            return None
        cf = body.get("cf") or {}
        return (body.get("teamId"), body.get("priority"), tuple(sorted(cf.items())))

    def _bulk_size(self) -> int:
        return UPDATE_MANY_MAX

    def _write_bulk(self, batch: Sequence[_Prepared]) -> list[ApplyResult]:
        """Notes and replies one call per ticket (Desk has no bulk comment), then ``updateMany``
        calls (one field per call) with the level field last, so the crash rule holds; tags go
        one ticket at a time (Desk has no bulk tag call): before the ``updateMany`` calls with a
        field marker, after them with a tag marker (the marker last, as on the single path)."""
        results: dict[int, ApplyResult] = {}
        written: list[tuple[int, _Prepared]] = []
        for index, p in enumerate(batch):
            try:
                self._post_comments(p)
                if not self._tag_marker:
                    self._write_tags(p)
            except OutcomeUnknown as exc:  # settled by BaseConnector, like a lost answer alone
                results[index] = ApplyResult(
                    p.ticket.id, ok=False, error=str(exc), retryable=True, unknown=True
                )
                continue
            except ApiError as exc:
                if _concerns_every_ticket(exc):
                    raise
                results[index] = _failed(p.ticket.id, exc)
                continue
            written.append((index, p))
        if written:
            ids = [p.ticket.id for _, p in written]
            body = written[0][1].body
            steps: list[tuple[str, Any, bool]] = []
            if "teamId" in body:
                steps.append(("teamId", body["teamId"], False))
            if "priority" in body:
                steps.append(("priority", body["priority"], False))
            for name, value in (body.get("cf") or {}).items():
                steps.append((name, value, True))  # last: the level field marks the work as done
            try:
                for name, value, custom in steps:
                    self.client.update_many(name, ids, value, custom=custom)
            except ApiError as exc:
                if _concerns_every_ticket(exc):
                    raise
                # Which ids a failed updateMany changed is not documented: fall back to a PATCH
                # per ticket, which is idempotent and reports per ticket.
                log.info(
                    "zohodesk: updateMany failed (%s); updating %s tickets one by one",
                    exc,
                    len(ids),
                )
                for index, p in written:
                    results[index] = self._outcome(
                        p.ticket.id, partial(self._write, p, comments_posted=True)
                    )
            else:
                for index, p in written:
                    p.changed = True
                    results[index] = self._outcome(p.ticket.id, partial(self._finish_bulk, p))
        return [results[i] for i in range(len(batch))]

    def _finish_bulk(self, p: _Prepared) -> ApplyResult:
        """One ticket after the ``updateMany`` calls: its tags (a tag marker last)."""
        self._write_tags(p)
        return ApplyResult(p.ticket.id, ok=True, actions=p.actions)

    # -- check ----------------------------------------------------------------------------------

    def agent_url(self, ticket_id: str) -> str | None:
        """``agent_ticket_url`` with the ticket's id; None when unset: Desk's agent view has the
        portal's name in its path, which escbridge does not learn (the API's ``webUrl`` holds
        it too, but only on a fetched ticket, and linking must not call out)."""
        template = self.config.agent_ticket_url
        return template.replace("{id}", quote(ticket_id, safe="")) if template else None

    def check(self, groups: Collection[str]) -> CheckReport:
        """Credentials, org, scopes, group names, level field, priorities, credits, webhooks."""
        problems: list[str] = []
        notes: list[str] = []
        signed_in = check_identity(
            self.tokens.token,
            product="Zoho Accounts",
            where=f"the {self.config.data_centre!r} data centre",
            credentials="client_id, client_secret and refresh_token",
        )
        if isinstance(signed_in, CheckReport):
            return signed_in
        pair = self.tokens.pair
        dc = DATA_CENTRES[self.config.data_centre]
        identity = f"Zoho Desk {pair.desk} ({dc.label} data centre), org {self.config.org_id}"
        try:
            orgs = self.client.organizations()
        except ApiError as exc:
            problems.append(f"cannot list organisations: {exc}")
        else:
            mine = [o for o in orgs if str(o.get("id")) == self.config.org_id]
            if mine:
                name = mine[0].get("companyName") or mine[0].get("portalName") or ""
                identity = f"{identity} — {name}".rstrip(" —")
            else:
                known = ", ".join(
                    f"{o.get('id')} ({o.get('companyName') or o.get('portalName') or '?'})"
                    for o in orgs
                )
                problems.append(
                    f"org_id {self.config.org_id} is not an organisation of this user "
                    f"(they have: {known or 'none'})"
                )
        missing_scopes = self._missing_scopes(notes)
        for scope in missing_scopes:
            text = f"scope {scope} is missing ({REQUIRED_SCOPES[scope]})"
            if scope == "Desk.tickets.CREATE" and not self._tag_marker:
                notes.append(f"{text}: the level field needs none, rules with tags fail")
            else:
                problems.append(text)

        missing_groups: list[str] = []
        if "Desk.basic.READ" not in missing_scopes:
            for group in dict.fromkeys(groups):
                try:
                    resolved = self.directory.try_resolve(group)
                except ApiError as exc:
                    problems.append(f"cannot list teams and departments: {exc}")
                    break
                if isinstance(resolved, str):
                    missing_groups.append(group)
                    problems.append(f'group "{group}": {resolved}')
        self._check_fields(problems, notes, skip="Desk.settings.READ" in missing_scopes)
        self._check_agent(notes)
        if self.client.credits.remaining is not None:
            notes.append(f"{self.client.credits.remaining} API credits left today")
        if not self.config.webhook_token or not self.config.webhook_ids:
            notes.append(
                "webhooks not configured (webhook_token and webhook_id): escalations come from "
                "the scheduled sync only"
            )
        return CheckReport.of(
            identity, problems=problems, missing_groups=missing_groups, notes=notes
        )

    def _missing_scopes(self, notes: list[str]) -> list[str]:
        token = self.tokens.current
        if token is not None and token.scopes is not None:
            return [s for s in REQUIRED_SCOPES if not scope_granted(s, token.scopes)]
        # The accounts server did not list the scopes: probe one harmless read per scope.
        probes: dict[str, Callable[[], Any]] = {
            "Desk.tickets.READ": lambda: self.client.call("GET", "/tickets", params={"limit": 1}),
            "Desk.search.READ": lambda: self.client.call(
                "GET", "/tickets/search", params={"limit": 1}
            ),
            "Desk.basic.READ": lambda: self.client.call("GET", "/departments", params={"limit": 1}),
            "Desk.settings.READ": self.client.ticket_fields,
            # No read needs Desk.tickets.CREATE: removing a tag from a ticket that cannot exist
            # (id 0) changes nothing, and Desk answers SCOPE_MISMATCH without the scope.
            "Desk.tickets.CREATE": lambda: self.client.dissociate_tags("0", [PROBE_TAG]),
        }
        missing = []
        for scope, probe in probes.items():
            try:
                probe()
            except ApiError as exc:
                if exc.code == "SCOPE_MISMATCH":
                    missing.append(scope)
        notes.append(
            "the token's scopes were not listed by Zoho Accounts; they were probed (reads, and "
            "a tag removal from ticket 0, which does not exist); Desk.tickets.UPDATE is proven "
            "by the first escalation"
        )
        return missing

    def _check_fields(self, problems: list[str], notes: list[str], *, skip: bool) -> None:
        if skip:
            return
        try:
            fields = self.client.ticket_fields()
        except ApiError as exc:
            notes.append(f"could not read the ticket fields: {exc}")
            return
        by_name = {str(f.get("apiName") or ""): f for f in fields}
        marker_field, level_field = self.config.marker_field, self.config.level_field
        if marker_field and marker_field not in by_name:
            problems.append(
                f"the ticket field {marker_field} does not exist: add a single-line custom "
                "field (docs/helpdesks/zohodesk.md, step 3: the level marker), set level_field, "
                "or use level_marker: tag"
            )
        elif marker_field:
            notes.append(f"the level marker is kept in the ticket field {marker_field}")
        else:
            legacy = (
                f"; levels an older setup wrote into {level_field} are still read"
                if level_field and level_field in by_name
                else ""
            )
            notes.append(f"the level marker is the ticket tag {LevelMarker.PREFIX}<level>{legacy}")
        values = [
            str(v.get("value") if isinstance(v, Mapping) else v)
            for v in (by_name.get("priority") or {}).get("allowedValues") or ()
        ]
        unmapped = [v for v in values if v and not self.priorities.known(v)]
        if unmapped:
            notes.append(
                "priority values not in priority_map (read as normal): " + ", ".join(unmapped)
            )

    def _check_agent(self, notes: list[str]) -> None:
        who = self.identity.known or self.identity.learn_now()
        if who is None:
            notes.append(
                "agent_id unknown: set it so webhook events caused by escbridge are ignored"
            )
        else:
            who_else = f" ({who.label})" if who.label else ""
            notes.append(f"escbridge acts as agent {who.id}{who_else}")

    def _learn_agent(self, value: Any) -> None:
        """Our own update's answer names the agent escbridge writes as (``modifiedBy``)."""
        if self.identity.known is None and value not in (None, ""):
            self.identity.set(Identity(str(value)))

    # -- webhooks -------------------------------------------------------------------------------

    def answer_validation(self, query: Mapping[str, str]) -> int:
        """The status for Desk's URL-validation GET: 200 when the URL carries our token."""
        return 200 if self.verifier.url_token_ok(query) else 401

    def verify_request(self, request: WebhookRequest) -> None:
        self.verifier.verify(request.headers, request.body, request.query)

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        return parse_events(request.body, self.instance)

    # -- sandbox --------------------------------------------------------------------------------

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating Zoho Desk and Zoho Accounts (see escbridge_zohodesk.sandbox)."""
        from escbridge_zohodesk.sandbox import create_app

        return create_app(**options)

    @classmethod
    def sandbox_driver(cls) -> ZohoDeskDriver:
        """The Zoho Desk emulator driven for `escbridge sandbox` and `escbridge demo`."""
        from escbridge_zohodesk.sandbox_driver import ZohoDeskDriver

        return ZohoDeskDriver()


def _halves(lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    mid = lo + (hi - lo) / 2
    mid = mid.replace(microsecond=(mid.microsecond // 1000) * 1000)
    return [(lo, mid), (mid, hi)]


def _parse_cursor(cursor: str) -> datetime:
    try:
        parsed = parse_time(cursor)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"not a Zoho Desk sync cursor: {cursor!r}")
    return parsed


def _retryable(exc: ApiError) -> bool:
    return isinstance(exc, TransientError | RateLimited) or exc.status is None


def _concerns_every_ticket(exc: ApiError) -> bool:
    """Credentials refused, or the portal's credits spent for the day: stop, do not go on."""
    return isinstance(exc, AuthError) or (
        isinstance(exc, RateLimited) and exc.resume_at is not None
    )


def _failed(ticket_id: str, exc: ApiError) -> ApplyResult:
    kind = (
        "not found"
        if isinstance(exc, NotFound)
        else "not allowed"
        if isinstance(exc, PermissionDeniedError)
        else "refused"
    )
    return ApplyResult(ticket_id, ok=False, error=f"{kind}: {exc}", retryable=_retryable(exc))


def _conforms(connector: ZohoDeskConnector) -> Connector:
    """mypy proves here that ZohoDeskConnector meets the Connector protocol."""
    return connector


__all__ = ["REQUIRED_SCOPES", "ZohoDeskConnector", "scope_granted"]
