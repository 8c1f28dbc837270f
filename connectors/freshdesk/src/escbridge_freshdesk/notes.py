"""Handover notes that are written exactly once, although writing one escalation takes two calls.

Freshdesk has no "update plus note" call: an escalation is ``PUT /tickets/{id}`` and then
``POST /tickets/{id}/notes``. A crash or a failed call between the two must leave neither a
ticket escalated without its note nor one with two notes. The design:

- the PUT comes first and is idempotent: the level tag it writes shows it was done, so a retry
  skips it;
- every note ends with a visible reference, ``escbridge ref: esc-<hash>``, derived from the
  ticket and the transition (target level, group, tags) — not from the note's text, which can
  change when the engine decides again;
- when the level tag is already there (a retry), the ticket's conversations are read first and
  the note is posted only if the latest escbridge note does not carry this reference;
- a POST whose answer was lost (timeout, reset, 500/502/504: ``OutcomeUnknown``) is never
  blindly repeated: after a wait long enough for a late POST to complete
  (``write_settle_seconds``, in ``escbridge.connector.BaseConnector``) the conversations are
  read and it is posted again only if it is not there.

A customer update (public reply) is written after the note, so "a public reply by us after our
note" means it was sent.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from escbridge.model import Actions, LevelMarker

__all__ = [
    "REF_LABEL",
    "escalation_ref",
    "find_note",
    "normalise_text",
    "note_html",
    "reply_after",
    "reply_html",
    "tag_changes",
]

REF_LABEL = "escbridge ref:"
_REF = re.compile(r"escbridge ref:\s*(esc-[0-9a-f]{6,64})", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def tag_changes(actions: Actions) -> tuple[list[str], set[str]]:
    """Tags to add (the level marker last, so it ends last in the list) and tags to remove."""
    marker = LevelMarker.tag(actions.level) if actions.level else None
    add: list[str] = []
    for tag in actions.tags_add:
        text = tag.strip().lower()
        if text and text != marker and text not in add:
            add.append(text)
    if marker:
        add.append(marker)
    remove = {t.strip().lower() for t in actions.tags_remove} - set(add)
    return add, remove


def escalation_ref(ticket_id: str, actions: Actions) -> str:
    """A stable reference for one transition of one ticket (same decision -> same ref)."""
    add, remove = tag_changes(actions)
    basis = "|".join(
        (
            str(ticket_id),
            (actions.level or "").lower(),
            (actions.group or "").casefold(),
            ",".join(sorted(add)),
            ",".join(sorted(remove)),
        )
    )
    return "esc-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in parts)


def note_html(text: str, ref: str) -> str:
    """The note as Freshdesk's HTML body, ending with the reference line."""
    return f"{_paragraphs(text)}<p>{REF_LABEL} {ref}</p>"


def reply_html(text: str) -> str:
    return _paragraphs(text)


def normalise_text(value: str) -> str:
    """HTML or text -> lower-case words separated by single spaces (for comparisons)."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip().casefold()


def _text_of(conversation: Mapping[str, Any]) -> str:
    return str(conversation.get("body_text") or conversation.get("body") or "")


def _ref_of(conversation: Mapping[str, Any]) -> str | None:
    for key in ("body_text", "body"):
        match = _REF.search(str(conversation.get(key) or ""))
        if match:
            return match.group(1).lower()
    return None


def find_note(conversations: Sequence[Mapping[str, Any]], ref: str) -> int | None:
    """Index of our note for ``ref``, if it is the latest escbridge note on the ticket.

    "Latest" matters when a ticket makes the same transition twice (a human took it back down
    by hand): the earlier note must not count for the later escalation.
    """
    latest: tuple[int, str] | None = None
    for index, conversation in enumerate(conversations):
        if conversation.get("private") is False:
            continue
        found = _ref_of(conversation)
        if found is not None:
            latest = (index, found)
    if latest is not None and latest[1] == ref.lower():
        return latest[0]
    return None


def reply_after(conversations: Sequence[Mapping[str, Any]], start: int, text: str) -> bool:
    """Whether a public reply containing ``text`` follows index ``start`` (our note).

    Matched on the normalised text, which survives Freshdesk's HTML and an appended signature.
    """
    wanted = normalise_text(text)[:200]
    if not wanted:
        return False
    for conversation in conversations[start + 1 :]:
        if conversation.get("private") or conversation.get("incoming"):
            continue
        if wanted in normalise_text(_text_of(conversation)):
            return True
    return False
