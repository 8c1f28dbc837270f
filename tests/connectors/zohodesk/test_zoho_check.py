"""check(): what `escbridge check` tells the admin about a Zoho Desk instance."""

from __future__ import annotations

from escbridge_zohodesk.connector import scope_granted
from zohodesk_support import DESK, ORG_ID, TOKEN_URL, Clock, load, make_connector, token_reply

ORGS = {"data": [{"id": ORG_ID, "companyName": "Zylker", "portalName": "zylker"}]}


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
    token_reply(rsps)
    install(rsps)
    report = make_connector(clock).check(["L2 Support", "Billing", "Billing/Leads"])
    assert report.ok, report.problems
    assert (
        report.identity == "Zoho Desk https://desk.zoho.eu (EU data centre), org 20065432 — Zylker"
    )
    assert "priority values not in priority_map (read as normal): Urgent" in report.notes
    assert "48210 API credits left today" in report.notes
    assert "escbridge acts as agent 55430000000064999" in report.notes


def test_missing_scopes_are_named_with_what_they_are_for(rsps, clock):
    token_reply(rsps, scope="Desk.tickets.ALL Desk.basic.READ")
    install(rsps)
    report = make_connector(clock).check([])
    assert not report.ok
    assert report.problems == (
        "scope Desk.search.READ is missing (the scheduled sync (GET /tickets/search))",
        "scope Desk.settings.READ is missing (check the level field and the priority values)",
    )


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


def test_a_missing_level_field_is_a_problem(rsps, clock):
    token_reply(rsps)
    install(rsps, fields={"data": [{"apiName": "priority", "allowedValues": [{"value": "High"}]}]})
    report = make_connector(clock).check([])
    assert any("cf_escalation_level does not exist" in p for p in report.problems)


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
    assert "escbridge acts as agent 55430000000064111" in report.notes
    assert connector.agent_id == "55430000000064111"
