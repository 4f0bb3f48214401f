"""Every error the application raises on purpose. Members also subclass the stdlib type."""

from __future__ import annotations


class CampaignError(Exception):
    """Base class for the application's own errors."""


class CampaignFileError(CampaignError, ValueError):
    """A campaign definition file is missing something or has a wrong value."""


class UnknownCampaign(CampaignError, LookupError):
    """No campaign has this slug."""


class InvalidInput(CampaignError, ValueError):
    """Supporter or staff input failed validation; ``fields`` maps field → message."""

    def __init__(self, fields: dict[str, str], message: str = "invalid input") -> None:
        super().__init__(message)
        self.fields = fields


class CampaignClosed(CampaignError):
    """The campaign is paused; appeals are not taken."""


class TokenInvalid(CampaignError, LookupError):
    """A confirmation token that matches no appeal awaiting confirmation."""


class TokenExpired(TokenInvalid):
    """A confirmation token older than ``CONFIRM_TOKEN_DAYS``."""


class RelayRefused(CampaignError, OSError):
    """The SMTP relay may not be used from here (e.g. not on loopback in a test)."""
