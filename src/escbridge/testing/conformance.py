"""The connector conformance suite: what every escbridge connector must do, as pytest tests.

A connector author subclasses ``ConnectorConformance`` in a test module and provides a
``harness`` fixture — a ``ConformanceHarness`` over the plugin's emulator (or a sandbox
account) — and pytest runs every test below against the plugin::

    import pytest
    from escbridge.testing.conformance import ConnectorConformance

    @pytest.fixture(scope="module")
    def harness():
        with MyDeskHarness() as h:      # starts the emulator, builds connectors for it
            yield h

    class TestMyDesk(ConnectorConformance):
        pass

What is checked is what a helpdesk admin would check on the ticket, read from the helpdesk
itself (``harness.read``), not from the connector's own account of it:

- an escalation lands: group, a raised priority, one internal note, the level marker;
- applying the same escalation again (a retry after a lost answer) leaves one note and one
  marker; the marker round-trips (``fetch_ticket(...).level``);
- a concurrent edit reaches ``on_conflict`` with the re-fetched ticket; without a handler it
  raises ``Conflict`` and writes nothing; a ticket that keeps changing gives up with
  ``ApplyResult(ok=False, conflict=True, retryable=True)``; ``apply_many`` reports a conflict
  instead of raising it (the conflict semantics of ``escbridge.connector.contract``);
- a human's tags are never wiped and a priority is never lowered, by ``apply`` or
  ``apply_many``;
- the version an ``apply`` or ``apply_many`` reports (if any) is the ticket's as the helpdesk
  then holds it (``fetch_ticket(...).version``): the worker drops a webhook whose ticket still
  has it as escbridge's own change, so a stale version only costs a re-decision and a wrong
  one must never happen;
- webhooks: a genuine delivery verifies and parses to the ticket; a forged one and one without
  credentials raise ``WebhookAuthError``; a redelivery has the same dedupe keys; the webhooks
  escbridge's own write causes are recognised by ``is_own_change``, a person's are not; the
  door's question ``own_change_known`` makes no network call, says None (cannot tell) while
  who escbridge writes as is not known, and once it is, never contradicts ``is_own_change``;
- the credentials never appear in an error, a repr, a check report or a log line — after a
  refused login and after a server error.

Tests must not depend on timing: harnesses give connectors a sleep that does not really wait
(or barely), and wait for webhooks with the emulator's flush, never with a fixed sleep.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable
from unittest import mock

import pytest
import requests.adapters

from escbridge.connector import Connector, WebhookRequest
from escbridge.errors import ApiError, AuthError, Conflict, TransientError, WebhookAuthError
from escbridge.model import Actions, LevelMarker, Priority, Ticket, TicketEvent
from escbridge.sandbox import serve
from escbridge.testing.wsgi import Outage, WebhookCatcher, WsgiApp

__all__ = [
    "ConformanceHarness",
    "ConnectorConformance",
    "HelpdeskTicket",
    "LoopbackHarness",
    "NetworkCall",
    "brief_sleep",
    "escalation",
    "no_network",
]


FLUSH_SECONDS = 60.0
"""How long ``LoopbackHarness.webhooks`` waits for an emulator's deliveries at most."""


@dataclass(frozen=True)
class HelpdeskTicket:
    """One ticket as the helpdesk holds it, read by the harness from the helpdesk's own data.

    ``markers``: the distinct level markers the ticket carries, as marker tags, sorted — from
    its tags and from a level custom field (a field's ``l2`` counts as ``escbridge_l2``), so a
    ticket marked consistently in both places has one; ``notes``: the texts of its internal
    (private) notes, oldest first.
    """

    tags: frozenset[str]
    priority: Priority
    group: str | None
    notes: tuple[str, ...]
    markers: tuple[str, ...]


@runtime_checkable
class ConformanceHarness(Protocol):
    """What the suite needs from a connector author: their plugin, wired to a helpdesk.

    ``groups``: at least two group names the helpdesk has (a frontline group first);
    ``has_tags``: whether the helpdesk has ticket tags (all three built-in ones do).
    """

    groups: Sequence[str]
    has_tags: bool

    def connector(self, *, valid_credentials: bool = True) -> Connector:
        """A connector for the helpdesk; with ``valid_credentials=False`` its credentials are
        refused (a revoked token, a wrong key)."""
        ...

    def secrets(self) -> Collection[str]:
        """Every secret value given to any connector this harness builds (the wrong ones too)."""
        ...

    def create_ticket(
        self,
        *,
        tags: Collection[str] = (),
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
    ) -> str:
        """A ticket as a customer opens it, in the frontline group; ``level``: already
        escalated there before (it carries that level's marker). Its id."""
        ...

    def human_edit(self, ticket_id: str, *, tags: Collection[str] = ()) -> None:
        """A person edits the ticket in the helpdesk: adds ``tags`` (where there are tags) and
        in any case changes it so its version moves and the helpdesk fires its webhook."""
        ...

    def read(self, ticket_id: str) -> HelpdeskTicket:
        """The ticket as the helpdesk holds it now."""
        ...

    def webhooks(self) -> list[WebhookRequest]:
        """The webhook requests the helpdesk sent since the last call, oldest first (after
        waiting for those already on their way)."""
        ...

    def forge(self, request: WebhookRequest) -> WebhookRequest:
        """``request`` as someone without the webhook secret would send it (signed with
        another key, or carrying a guessed secret)."""
        ...

    def outage(self, status: int = 500) -> AbstractContextManager[None]:
        """While the block runs, the helpdesk answers every API request with ``status``."""
        ...


def brief_sleep(seconds: float) -> None:
    """A harness's ``sleep``: retries and job polls wait a moment, not their full back-off.

    Emulators run their bulk jobs in a thread, so some real time must pass; 20 ms at most.
    """
    time.sleep(min(seconds, 0.02))


class LoopbackHarness:
    """The half of a harness every emulator shares: the emulator's API served on 127.0.0.1
    behind an ``Outage`` switch, and a ``WebhookCatcher`` for the webhooks it sends.

    ``flush(timeout)`` waits until the emulator has sent every webhook queued so far (its
    dispatcher's ``flush``; given a minute, so a loaded machine is waited for, not failed).
    ``validate`` answers a validation GET to the webhook URL, if the helpdesk makes one.
    A subclass adds the connector, tickets and reading (``ConformanceHarness``). Use it as a
    context manager; ``close()`` stops both servers.
    """

    groups: Sequence[str] = ()
    has_tags: bool = True

    def __init__(
        self,
        app: WsgiApp,
        *,
        flush: Callable[[float], bool],
        validate: Callable[[Mapping[str, str]], int] | None = None,
    ) -> None:
        self._outage = Outage(app)
        self._catcher = WebhookCatcher(validate=validate)
        self._flush = flush
        self._api_server = serve(self._outage)
        self._hook_server = serve(self._catcher)

    @property
    def api_url(self) -> str:
        """Where the emulator's API answers (give it to the connector's settings)."""
        return self._api_server.url

    @property
    def hook_url(self) -> str:
        """Where the emulator should send its webhooks (add the path and query you like)."""
        return self._hook_server.url

    def webhooks(self) -> list[WebhookRequest]:
        assert self._flush(FLUSH_SECONDS), "the emulator did not deliver its webhooks"
        return self._catcher.take()

    def outage(self, status: int = 500) -> AbstractContextManager[None]:
        return self._outage.during(status)

    def close(self) -> None:
        self._hook_server.stop()
        self._api_server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def escalation(
    level: str = "l2",
    *,
    group: str,
    priority: Priority | None = Priority.HIGH,
    previous: str | None = None,
    note: str | None = None,
    tags: Iterable[str] = (),
) -> Actions:
    """The actions the engine writes for an escalation to ``level`` (see ``Engine.decide``)."""
    return Actions(
        group=group,
        priority=priority,
        note=note or f"Escalated to {level} by the conformance suite ({uuid.uuid4().hex[:8]}).",
        tags_add=(LevelMarker.tag(level), *tags),
        tags_remove=(LevelMarker.tag(previous),) if previous else (),
        level=level,
    )


class NetworkCall(AssertionError):
    """Raised by ``no_network`` for a call made where none may be."""


@contextmanager
def no_network() -> Iterator[list[str]]:
    """While the block runs, any HTTP request this thread starts fails with ``NetworkCall``
    (and is listed in the yielded list, in case the code under test swallows the error).

    Both ways out are closed: ``requests`` (every connector's ``ApiClient``) and
    ``http.client`` (urllib, urllib3). Other threads — the emulator, its webhook dispatcher —
    are not affected, so the check does not depend on what they happen to do meanwhile.
    """
    guarded = threading.get_ident()
    calls: list[str] = []
    send = requests.adapters.HTTPAdapter.send
    putrequest = http.client.HTTPConnection.putrequest

    def refuse(what: str) -> None:
        calls.append(what)
        raise NetworkCall(f"a network call where none may be made: {what}")

    def guarded_send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == guarded:
            refuse(f"{request.method} {request.url}")
        return send(adapter, request, *args, **kwargs)

    def guarded_putrequest(conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == guarded:
            refuse(f"{method} {conn.host}{url}")
        return putrequest(conn, method, url, *args, **kwargs)

    with (
        mock.patch.object(requests.adapters.HTTPAdapter, "send", guarded_send),
        mock.patch.object(http.client.HTTPConnection, "putrequest", guarded_putrequest),
    ):
        yield calls


def _identity_known(connector: Connector) -> bool:
    """Whether the connector knows who it writes as (``BaseConnector.identity``); a plugin
    without that attribute counts as knowing nothing."""
    identity = getattr(connector, "identity", None)
    return getattr(identity, "known", None) is not None


def _noted(ticket: HelpdeskTicket, actions: Actions) -> int:
    """How many internal notes carry this escalation's note (connectors may add a reference)."""
    assert actions.note is not None
    return sum(1 for note in ticket.notes if actions.note in note)


def _texts_of(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), *(str(a) for a in exc.args)]


def _leaks(texts: Iterable[str], secrets: Collection[str]) -> list[str]:
    return sorted({s for s in secrets if s and any(s in text for text in texts)})


class ConnectorConformance:
    """The suite; subclass it as ``class TestMyDesk(ConnectorConformance)`` and provide a
    ``harness`` fixture (module scope is enough: every test makes its own tickets)."""

    # ------------------------------------------------------------------ check

    def test_check_resolves_the_groups_and_names_the_missing_one(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        assert connector.check(harness.groups).ok
        missing = f"No Such Group {uuid.uuid4().hex[:6]}"
        report = connector.check([*harness.groups, missing])
        assert not report.ok and report.missing_groups == (missing,)

    # ------------------------------------------------------------------ apply

    def test_an_escalation_lands_as_an_admin_sees_it(self, harness: ConformanceHarness) -> None:
        connector = harness.connector()
        ticket_id = harness.create_ticket(tags=["vip"] if harness.has_tags else ())
        actions = escalation(group=harness.groups[1])

        result = connector.apply(connector.fetch_ticket(ticket_id), actions)

        assert result.ok and not result.skipped and not result.conflict, result
        assert result.ticket_id == ticket_id
        after = harness.read(ticket_id)
        assert after.group == harness.groups[1]
        assert after.priority == Priority.HIGH
        assert _noted(after, actions) == 1 and len(after.notes) == 1
        assert after.markers == (LevelMarker.tag("l2"),)
        if harness.has_tags:
            assert "vip" in after.tags

    def test_applying_the_same_escalation_twice_leaves_one_note_and_one_marker(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        ticket_id = harness.create_ticket()
        actions = escalation(group=harness.groups[1])

        assert connector.apply(connector.fetch_ticket(ticket_id), actions).ok
        again = connector.apply(connector.fetch_ticket(ticket_id), actions)  # a retry

        assert again.ok, again
        after = harness.read(ticket_id)
        assert _noted(after, actions) == 1 and len(after.notes) == 1
        assert after.markers == (LevelMarker.tag("l2"),)

    def test_the_level_marker_round_trips(self, harness: ConformanceHarness) -> None:
        connector = harness.connector()
        ticket_id = harness.create_ticket(level="l1")
        ticket = connector.fetch_ticket(ticket_id)
        assert ticket.level == "l1"

        actions = escalation("l2", group=harness.groups[1], previous="l1")
        assert connector.apply(ticket, actions).ok

        assert connector.fetch_ticket(ticket_id).level == "l2"
        assert harness.read(ticket_id).markers == (LevelMarker.tag("l2"),)

    def test_a_priority_is_never_lowered(self, harness: ConformanceHarness) -> None:
        connector = harness.connector()
        single = harness.create_ticket(priority=Priority.HIGH)
        bulk = [harness.create_ticket(priority=Priority.HIGH) for _ in range(2)]
        actions = escalation(group=harness.groups[1], priority=Priority.NORMAL)

        assert connector.apply(connector.fetch_ticket(single), actions).ok
        results = connector.apply_many([(connector.fetch_ticket(t), actions) for t in bulk])

        assert all(r.ok for r in results), results
        for ticket_id in (single, *bulk):
            after = harness.read(ticket_id)
            assert after.priority == Priority.HIGH
            assert after.markers == (LevelMarker.tag("l2"),)

    def test_a_humans_tags_are_never_wiped(self, harness: ConformanceHarness) -> None:
        if not harness.has_tags:
            pytest.skip("this helpdesk has no ticket tags")
        connector = harness.connector()
        human = ("vip", "customer_is_waiting")
        single = harness.create_ticket(tags=human, level="l1")
        bulk = [harness.create_ticket(tags=human, level="l1") for _ in range(2)]
        actions = escalation(group=harness.groups[1], previous="l1", tags=["seen_by_escbridge"])

        assert connector.apply(connector.fetch_ticket(single), actions).ok
        results = connector.apply_many([(connector.fetch_ticket(t), actions) for t in bulk])

        assert all(r.ok for r in results), results
        for ticket_id in (single, *bulk):
            after = harness.read(ticket_id)
            assert after.tags >= {*human, "seen_by_escbridge", LevelMarker.tag("l2")}
            assert LevelMarker.tag("l1") not in after.tags

    def test_apply_many_writes_each_ticket_once_in_order(self, harness: ConformanceHarness) -> None:
        connector = harness.connector()
        ids = [harness.create_ticket() for _ in range(3)]
        actions = escalation(group=harness.groups[1])

        results = connector.apply_many([(connector.fetch_ticket(t), actions) for t in ids])

        assert [r.ticket_id for r in results] == ids
        assert all(r.ok and not r.skipped for r in results), results
        for ticket_id in ids:
            after = harness.read(ticket_id)
            assert after.group == harness.groups[1]
            assert _noted(after, actions) == 1 and after.markers == (LevelMarker.tag("l2"),)

    def test_the_version_reported_is_the_tickets_after_the_write(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        single = harness.create_ticket(level="l1")
        bulk = [harness.create_ticket(level="l1") for _ in range(2)]
        actions = escalation("l2", group=harness.groups[1], previous="l1")

        results = [connector.apply(connector.fetch_ticket(single), actions)]
        results += connector.apply_many([(connector.fetch_ticket(t), actions) for t in bulk])

        assert all(r.ok and not r.skipped for r in results), results
        for result in results:
            if result.version is not None:  # a connector may not know it: then it says None
                fresh = connector.fetch_ticket(result.ticket_id)
                assert result.version == fresh.version, (result, fresh.version)

    # ------------------------------------------------------------------ conflicts

    def test_a_concurrent_edit_reaches_on_conflict_with_the_fresh_ticket(
        self, harness: ConformanceHarness
    ) -> None:
        connector, ticket_id, stale = _read_then_edited(harness, tags=["hannah_looked"])
        seen: list[Ticket] = []
        actions = escalation(group=harness.groups[1])

        def decide_again(fresh: Ticket) -> Actions:
            seen.append(fresh)
            return actions

        result = connector.apply(stale, actions, on_conflict=decide_again)

        assert result.ok and result.conflicts == 1, result
        [fresh] = seen
        assert fresh.id == ticket_id and fresh.version != stale.version
        after = harness.read(ticket_id)
        assert _noted(after, actions) == 1 and after.markers == (LevelMarker.tag("l2"),)
        if harness.has_tags:
            assert "hannah_looked" in fresh.tags and "hannah_looked" in after.tags

    def test_a_conflict_decided_away_writes_nothing(self, harness: ConformanceHarness) -> None:
        connector, ticket_id, stale = _read_then_edited(harness)

        result = connector.apply(
            stale, escalation(group=harness.groups[1]), on_conflict=lambda fresh: None
        )

        assert result.ok and result.skipped and result.conflicts == 1, result
        after = harness.read(ticket_id)
        assert after.notes == () and after.markers == ()

    def test_a_conflict_without_a_handler_raises_and_writes_nothing(
        self, harness: ConformanceHarness
    ) -> None:
        connector, ticket_id, stale = _read_then_edited(harness)

        with pytest.raises(Conflict):
            connector.apply(stale, escalation(group=harness.groups[1]))

        after = harness.read(ticket_id)
        assert after.notes == () and after.markers == ()

    def test_a_ticket_that_keeps_changing_is_given_up_as_retryable(
        self, harness: ConformanceHarness
    ) -> None:
        connector, ticket_id, stale = _read_then_edited(harness)
        asked: list[Ticket] = []
        actions = escalation(group=harness.groups[1])

        def someone_edits_again(fresh: Ticket) -> Actions:
            asked.append(fresh)
            harness.human_edit(ticket_id)  # and again, before escbridge can write
            return actions

        result = connector.apply(stale, actions, on_conflict=someone_edits_again)

        assert not result.ok and result.conflict and result.retryable, result
        assert result.conflicts == len(asked) + 1 >= 2  # bounded: it stopped asking
        after = harness.read(ticket_id)
        assert after.notes == () and after.markers == ()

    def test_apply_many_reports_a_conflict_without_costing_the_others(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        ids = [harness.create_ticket() for _ in range(3)]
        tickets = [connector.fetch_ticket(t) for t in ids]
        harness.human_edit(ids[1])
        actions = escalation(group=harness.groups[1])

        results = connector.apply_many([(t, actions) for t in tickets])

        assert [r.ticket_id for r in results] == ids
        assert results[0].ok and results[2].ok, results
        assert not results[1].ok and results[1].conflict and results[1].retryable
        assert harness.read(ids[1]).markers == ()
        assert harness.read(ids[2]).markers == (LevelMarker.tag("l2"),)

    # ------------------------------------------------------------------ webhooks

    def _human_delivery(
        self, harness: ConformanceHarness, connector: Connector
    ) -> tuple[str, list[WebhookRequest]]:
        ticket_id = harness.create_ticket()
        harness.webhooks()  # whatever the creation sent
        harness.human_edit(ticket_id, tags=["hannah_looked"])
        requests = harness.webhooks()
        assert requests, "a person's edit should make the helpdesk send a webhook"
        return ticket_id, requests

    def _events(self, connector: Connector, request: WebhookRequest) -> list[TicketEvent]:
        connector.verify_webhook(request.headers, request.body, request.query)
        return connector.parse_webhook(request.headers, request.body)

    def test_a_genuine_webhook_verifies_and_names_the_ticket(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        ticket_id, requests = self._human_delivery(harness, connector)

        events = [e for r in requests for e in self._events(connector, r)]

        assert ticket_id in {e.ticket_id for e in events}
        assert all(e.instance == connector.instance and e.dedupe_key for e in events)
        assert not any(connector.is_own_change(e) for e in events)

    def test_forged_and_unauthenticated_webhooks_are_refused(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        _, requests = self._human_delivery(harness, connector)
        for request in requests:
            forged = harness.forge(request)
            with pytest.raises(WebhookAuthError):
                connector.verify_webhook(forged.headers, forged.body, forged.query)
            bare = WebhookRequest.of({"Content-Type": "application/json"}, request.body, {})
            with pytest.raises(WebhookAuthError):
                connector.verify_webhook(bare.headers, bare.body, bare.query)

    def test_a_redelivered_webhook_has_the_same_dedupe_keys(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        _, requests = self._human_delivery(harness, connector)
        for request in requests:
            first = [e.dedupe_key for e in self._events(connector, request)]
            again = [e.dedupe_key for e in self._events(connector, request)]
            assert first == again and first

    def test_the_webhooks_of_escbridges_own_write_are_recognised(
        self, harness: ConformanceHarness
    ) -> None:
        connector = harness.connector()
        ticket_id = harness.create_ticket()
        ticket = connector.fetch_ticket(ticket_id)
        harness.webhooks()

        assert connector.apply(ticket, escalation(group=harness.groups[1])).ok
        requests = harness.webhooks()

        events = [e for r in requests for e in self._events(connector, r)]
        ours = [e for e in events if e.ticket_id == ticket_id]
        assert ours, "escbridge's write should make the helpdesk send a webhook"
        assert all(connector.is_own_change(e) for e in ours), ours

    def test_the_doors_question_makes_no_call_and_waits_for_the_identity(
        self, harness: ConformanceHarness
    ) -> None:
        writer = harness.connector()
        ticket_id = harness.create_ticket()
        ticket = writer.fetch_ticket(ticket_id)
        harness.webhooks()
        assert writer.apply(ticket, escalation(group=harness.groups[1])).ok
        ours = [e for r in harness.webhooks() for e in self._events(writer, r)]
        _, human = self._human_delivery(harness, writer)
        theirs = [e for r in human for e in self._events(writer, r)]
        assert ours and theirs

        door = harness.connector()  # a receiver just started: it has learned nothing yet
        configured = _identity_known(door)  # e.g. Zendesk's integration_user_id
        with no_network() as calls:
            before = [door.own_change_known(e) for e in ours + theirs]
        assert calls == []
        if not configured:
            assert before == [None] * len(before), before

        worker = [door.is_own_change(e) for e in ours + theirs]  # may call: learns who it is
        assert worker == [True] * len(ours) + [False] * len(theirs)
        with no_network() as calls:
            after = [door.own_change_known(e) for e in ours + theirs]
        assert calls == []
        assert all(a is None or a == w for a, w in zip(after, worker, strict=True)), after

    # ------------------------------------------------------------------ secrets

    def test_refused_credentials_never_show_the_secrets(
        self, harness: ConformanceHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        ticket_id = harness.create_ticket()
        caplog.set_level(logging.DEBUG)
        connector = harness.connector(valid_credentials=False)

        with pytest.raises(AuthError) as refused:
            connector.fetch_ticket(ticket_id)
        report = connector.check(harness.groups)

        assert not report.ok and report.problems
        texts = [
            *_texts_of(refused.value),
            repr(connector),
            *report.problems,
            *report.notes,
            report.identity,
            caplog.text,
        ]
        assert _leaks(texts, harness.secrets()) == []

    def test_a_server_error_never_shows_the_secrets(
        self, harness: ConformanceHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        ticket_id = harness.create_ticket()
        connector = harness.connector()
        ticket = connector.fetch_ticket(ticket_id)
        caplog.set_level(logging.DEBUG)

        with harness.outage(500):
            with pytest.raises(TransientError) as failed:
                connector.fetch_ticket(ticket_id)
            try:  # raised, or a failed result: the secrets are what matters here
                result = connector.apply(ticket, escalation(group=harness.groups[1]))
            except ApiError as exc:
                written = _texts_of(exc)
            else:
                assert not result.ok and result.retryable, result
                written = [str(result.error)]

        texts = [*_texts_of(failed.value), *written, repr(connector), caplog.text]
        assert _leaks(texts, harness.secrets()) == []


def _read_then_edited(
    harness: ConformanceHarness, *, tags: Collection[str] = ()
) -> tuple[Connector, str, Ticket]:
    """A connector, a ticket it has read, and then a human's edit: its read is now stale."""
    connector = harness.connector()
    ticket_id = harness.create_ticket()
    stale = connector.fetch_ticket(ticket_id)
    harness.human_edit(ticket_id, tags=tags)
    return connector, ticket_id, stale
