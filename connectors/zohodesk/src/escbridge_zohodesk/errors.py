"""Zoho-specific typed errors, subclasses of the shared ones so generic handlers still work.

``CreditsExhausted`` is the one the sync loop must catch: the portal's daily API credits are
gone, nothing will succeed until ``resume_at``, and retrying sooner only wastes the attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from escbridge.errors import EscbridgeError
from escbridge.http import AuthError, RateLimited

__all__ = ["CreditsExhausted", "TokenLimitReached", "UnknownGroup", "WrongDataCentre"]


class CreditsExhausted(RateLimited):
    """HTTP 429 ``THRESHOLD_EXCEEDED`` (or the configured credit reserve reached).

    Stop the run, keep the cursor, and start again at ``resume_at`` (UTC). ``retry_after`` is
    the same moment in seconds from when it was raised.
    """

    def __init__(self, message: str, *, resume_at: datetime, **kw: Any) -> None:
        self.resume_at = resume_at
        super().__init__(message, **kw)


class TokenLimitReached(RateLimited):
    """Zoho Accounts refuses new access tokens for this client (at most 10 per 10 minutes).

    Raised before asking when escbridge itself has used up the allowance, so the block Zoho puts
    on the rest of the window is never triggered by escbridge.
    """


class WrongDataCentre(AuthError):
    """The credentials belong to another Zoho data centre than ``data_centre`` says."""


class UnknownGroup(EscbridgeError):
    """A matrix group name that is no team or department of the portal (or is ambiguous)."""
