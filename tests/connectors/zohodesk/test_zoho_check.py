"""check(): what `escbridge check` tells the admin about a Zoho Desk instance."""

from __future__ import annotations

import json

import responses
from escbridge_zohodesk.connector import scope_granted
from zohodesk_support import DESK, ORG_ID, TOKEN_URL, Clock, load, make_connector, token_reply

ORGS = {"data": [{"id": ORG_ID, "companyName": "Zylker", "portalName": "zylker"}]}
# the scopes docs/helpdesks/zohodesk.md asks for in step 2 (token.json was recorded before
# tags needed Desk.tickets.CREATE)
DOCS_SCOPES = (
    "Desk.tickets.READ Desk.tickets.UPDATE Desk.tickets.CREATE Desk.search.READ Desk.basic.READ "
    "Desk.settings.READ Desk.events.READ Desk.events.CREATE"
)


def acts_as(report, agent: str) -> bool:
    return any(n.startswith(f"escbridge acts as agent {agent}") for n in report.notes)


def install(rsps, *, fields=None, orgs=ORGS):
    rsps.get(f"{DESK}/organizations", json=orgs)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    rsps.get(
        f"{DESK}/organizationFields",
        json=fields or load("fields.json"),
        headers={"X-Rate-Limit-Remaining-v3": "48210"},
    )


def test_a_ready_instance(rsps, clock):
    token_reply(rsps, scope=DOCS_SCOPES)
    install(rsps)
    report = make_connector(clock).check(["L2 Support", "Billing", "Billing/Leads"])
    assert report.ok, report.problems
    assert (
        report.identity == "Zoho Desk https://desk.zoho.eu (EU data centre), org 20065432 — Zylker"
    )
    assert "priority values not in priority_map (read as normal): Urgent" in report.notes
    assert "48210 API credits left today" in report.notes
    assert acts_as(report, "55430000000064999")
    assert any(n.startswith("the level marker is the ticket tag escbridge_<") for n in report.notes)


def test_missing_scopes_are_named_with_what_they_are_for(rsps, clock):
    token_reply(rsps, scope="Desk.tickets.ALL Desk.basic.READ")
    install(rsps)
    report = make_connector(clock).check([])
    assert not report.ok
    assert report.problems == (
        "scope Desk.search.READ is missing (the scheduled sync (GET /tickets/search))",
        "scope Desk.settings.READ is missing (check the level field and the priority values)",
    )


TAG_SCOPE_MISSING = (
    "scope Desk.tickets.CREATE is missing (add and remove tags (POST /tickets/{id}/associateTag, "
    "dissociateTag): the level marker and the rules' tags)"
)


def test_the_tag_scope_is_a_problem_when_the_marker_is_a_tag(rsps, clock):
    """zohodesk-oas v1.0/TicketTag.json: associateTag and dissociateTag need Desk.tickets.CREATE,
    which a token made with the scopes escbridge asked for before tags lacks."""
    token_reply(rsps)  # token.json: READ, UPDATE, search, basic, settings, events — no CREATE
    install(rsps)
    report = make_connector(clock).check([])
    assert report.problems == (TAG_SCOPE_MISSING,)


def test_the_tag_scope_is_only_a_note_when_the_marker_is_a_field(rsps, clock):
    token_reply(rsps)
    install(rsps)
    report = make_connector(clock, level_marker="field").check([])
    assert report.ok, report.problems
    assert f"{TAG_SCOPE_MISSING}: the level field needs none, rules with tags fail" in report.notes
    assert "the level marker is kept in the ticket field cf_escalation_level" in report.notes


def test_an_unlisted_tag_scope_is_probed_with_a_removal_from_ticket_0(rsps, clock):
    """No read needs Desk.tickets.CREATE: check removes a tag from a ticket that cannot exist."""
    rsps.post(TOKEN_URL, json={"access_token": "1000.t", "expires_in": 3600})  # no "scope"
    install(rsps)
    rsps.get(f"{DESK}/tickets", status=204)
    rsps.get(f"{DESK}/tickets/search", status=204)
    probe = rsps.post(
        f"{DESK}/tickets/0/dissociateTag",
        status=401,
        json={"errorCode": "SCOPE_MISMATCH", "message": "scope mismatch"},
    )
    report = make_connector(clock).check([])
    assert report.problems == (TAG_SCOPE_MISSING,)
    assert json.loads(probe.calls[0].request.body) == {"tags": ["escbridge_scope_probe"]}

    rsps.replace(
        responses.POST,
        f"{DESK}/tickets/0/dissociateTag",
        status=404,
        json={"errorCode": "URL_NOT_FOUND", "message": "The URL you requested could not be found."},
    )
    assert make_connector(clock).check([]).ok  # the scope is there: Desk looked for ticket 0


def test_scope_families_and_case():
    assert scope_granted("Desk.tickets.UPDATE", {"Desk.tickets.ALL"})
    assert scope_granted("Desk.tickets.READ", {"desk.tickets.read"})
    assert not scope_granted("Desk.search.READ", {"Desk.tickets.ALL"})


def test_unlisted_scopes_are_probed(rsps, clock):
    rsps.post(TOKEN_URL, json={"access_token": "1000.t", "expires_in": 3600})  # no "scope"
    install(rsps)
    rsps.get(f"{DESK}/tickets", status=204)
    rsps.get(
        f"{DESK}/tickets/search",
        status=401,
        json={"errorCode": "SCOPE_MISMATCH", "message": "scope mismatch"},
    )
    report = make_connector(clock).check([])
    assert (
        "scope Desk.search.READ is missing (the scheduled sync (GET /tickets/search))"
        in report.problems
    )
    assert any("probed" in n for n in report.notes)


def test_an_org_the_user_does_not_have(rsps, clock):
    token_reply(rsps)
    install(rsps, orgs={"data": [{"id": "777", "companyName": "Other Co"}]})
    report = make_connector(clock).check([])
    assert not report.ok
    assert (
        "org_id 20065432 is not an organisation of this user (they have: 777 (Other Co))"
        in report.problems
    )


def test_unresolved_teams_and_departments(rsps, clock):
    token_reply(rsps)
    install(rsps)
    report = make_connector(clock).check(["L2 Support", "Tier 3", "Leads", "Sales/Leads"])
    assert report.missing_groups == ("Tier 3", "Leads", "Sales/Leads")
    assert any("no group named 'Tier 3'" in p for p in report.problems)
    assert any("several departments (Billing, Support)" in p for p in report.problems)
    assert any("no group named 'Sales/Leads'" in p for p in report.problems)


def test_a_missing_level_field_is_a_problem_when_it_is_the_marker(rsps, clock):
    token_reply(rsps)
    install(rsps, fields={"data": [{"apiName": "priority", "allowedValues": [{"value": "High"}]}]})
    report = make_connector(clock, level_marker="field").check([])
    assert any("cf_escalation_level does not exist" in p for p in report.problems)
    # the default, a tag, needs no field: nothing to create in Desk
    tagged = make_connector(clock).check([])
    assert not any("does not exist" in p for p in tagged.problems)
    assert "the level marker is the ticket tag escbridge_<level>" in tagged.notes


def test_bad_credentials_are_a_report_not_a_crash(rsps, clock):
    rsps.post(TOKEN_URL, json={"error": "invalid_client"})
    report = make_connector(clock).check(["L2 Support"])
    assert not report.ok
    assert "did not accept the client id/secret" in report.problems[0]


def test_an_unknown_agent_is_looked_up(rsps):
    token_reply(rsps)
    install(rsps)
    rsps.get(f"{DESK}/myinfo", json={"id": "55430000000064111", "name": "escbridge"})
    connector = make_connector(Clock(), agent_id=None)
    report = connector.check([])
    assert acts_as(report, "55430000000064111")
    assert connector.agent_id == "55430000000064111"
