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
    """The campaign takes no appeals: closed by an admin or at its deadline (for good),
    or, as :class:`CampaignPaused`, paused for now."""


class CampaignPaused(CampaignClosed):
    """The campaign is paused: it takes no new appeals for now; try again later."""


class TokenInvalid(CampaignError, LookupError):
    """A confirmation token that matches no appeal awaiting confirmation."""


class TokenExpired(TokenInvalid):
    """A confirmation token older than ``CONFIRM_TOKEN_DAYS``."""


class AlreadyConfirmed(TokenInvalid):
    """A confirmation token used already: its appeal was confirmed (``public_id``)."""

    def __init__(self, public_id: str) -> None:
        super().__init__("already confirmed")
        self.public_id = public_id


class RelayRefused(CampaignError, OSError):
    """The SMTP relay may not be used from here (e.g. not on loopback in a test)."""
