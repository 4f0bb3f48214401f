"""Whether the engine may send now: a pause of everything, a pause per campaign, and test
mode per campaign. Read once per dispatcher pass and once per batch (:func:`read`).

* **A pause** stops appeals to the targets, with no restart and nothing lost: confirmed
  appeals stay ``queued`` (or ``retrying``) in the database. The dispatcher hands out
  none of them (next pass: within ``DISPATCH_WINDOW``, or ``SWEEP_INTERVAL`` at most);
  a job that was already waiting in Redis claims none, or gives its appeals straight
  back; a batch that is sending gives back what it has not sent at its next write
  (every 2 s), through :func:`campaign.states.move`, without counting a try. The
  message on the wire when the pause comes finishes. Resuming wakes the dispatcher.
  Mail to supporters (confirmation links, receipts) is not paused: it names no target.
* **Test mode** sends each appeal to one staff address instead of its addressees, the
  subject marked ``[TEST]``: the envelope and the To and Cc headers name that address
  alone (:func:`campaign.mail.staff_copy`). The letter is unchanged. Each addressee's
  copy is recorded as accepted *in test*: its last reply reads ``[TEST] sent to
  <staff address> instead: <the relay's reply>``, and the appeal's reason says so, so
  nothing looks as if it reached a target. No pacing applies (no target is written
  to). Test mode is a switch on delivery: what still waits when it is switched off
  goes to its real addressees, so cancel test appeals before going live.

The global pause is a row of ``settings`` (its presence is the pause); the others are
columns of ``campaign_options``. Every switch is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, String, literal, null, select, union_all

from . import audit
from .db import db
from .exceptions import InvalidInput
from .models import CampaignOption, Role, Setting, User

EVERYTHING = "sending_paused"
"""The ``settings`` key whose row, while it exists, pauses every campaign's sending."""

_ALL = "*"

_STATE = union_all(
    select(
        CampaignOption.slug,
        CampaignOption.sending_paused,
        CampaignOption.test_address,
    ).where((CampaignOption.sending_paused.is_(True)) | (CampaignOption.test_address.isnot(None))),
    select(
        literal(_ALL, String),
        literal(True, Boolean),
        null().cast(String),
    ).where(Setting.key == EVERYTHING),
)
"""Every switch that is on, in one round trip: usually no row at all."""


@dataclass(frozen=True)
class Gate:
    """The switches in force, as read at one moment."""

    everything_paused: bool = False
    paused: frozenset[str] = frozenset()
    tests: Mapping[str, str] = field(default_factory=dict)

    def holds(self, campaign: str) -> bool:
        """True if this campaign's appeals must wait now."""
        return self.everything_paused or campaign in self.paused

    def test_address(self, campaign: str) -> str | None:
        """The staff address this campaign's appeals go to instead, in test mode."""
        return self.tests.get(campaign)

    @property
    def any_pause(self) -> bool:
        return self.everything_paused or bool(self.paused)


def read() -> Gate:
    """The switches in force now (one small query)."""
    everything, paused, tests = False, set(), {}
    for slug, is_paused, test_address in db.session.execute(_STATE):
        if slug == _ALL:
            everything = True
            continue
        if is_paused:
            paused.add(slug)
        if test_address:
            tests[slug] = test_address
    return Gate(everything, frozenset(paused), tests)


def _option(slug: str) -> CampaignOption:
    """The campaign's switches, a new row (with the defaults) if it has none yet."""
    option = db.session.get(CampaignOption, slug)
    if option is None:
        option = CampaignOption(
            slug=slug,
            confirmation_required=True,
            paused=False,
            closed=False,
            close_at_deadline=False,
            sending_paused=False,
        )
        db.session.add(option)
    return option


def set_paused(campaign: str | None, paused: bool, by: str) -> bool:
    """Pause (or resume) the sending of one campaign, or of everything if ``campaign`` is
    None; audited and committed. Returns False if it was so already. Resuming wakes the
    dispatcher, so that the appeals that waited leave at once."""
    if campaign is None:
        row = db.session.get(Setting, EVERYTHING)
        if (row is not None) == paused:
            return False
        if paused:
            db.session.add(Setting(key=EVERYTHING, value=True, updated_by=by))
        else:
            db.session.delete(row)
    else:
        option = db.session.get(CampaignOption, campaign)
        if bool(option and option.sending_paused) == paused:
            return False
        _option(campaign).sending_paused = paused
    audit.record(
        "sending paused" if paused else "sending resumed", campaign or "every campaign", actor=by
    )
    db.session.commit()
    if not paused:
        from .delivery.queue import wake_dispatcher  # the engine imports this module

        wake_dispatcher()
    return True


def staff_addresses() -> list[str]:
    """The addresses test mode may send to: active staff accounts'."""
    return list(
        db.session.scalars(
            select(User.email)
            .where(User.active.is_(True), User.role.in_(Role.ALL))
            .order_by(User.email)
        )
    )


def set_test_mode(campaign: str, address: str | None, by: str) -> bool:
    """Switch test mode on (every appeal to ``address``, a staff account's) or off (None);
    audited and committed. Returns False if nothing changed."""
    if address is not None and address not in staff_addresses():
        # Test mode must never become a way to mail anyone: staff addresses only.
        raise InvalidInput({"test_address": "Choose the address of an active staff account."})
    option = db.session.get(CampaignOption, campaign)
    if (option.test_address if option else None) == address:
        return False
    _option(campaign).test_address = address
    detail = f"{campaign}: on, to {address}" if address else f"{campaign}: off (live)"
    audit.record("test mode", detail, actor=by)
    db.session.commit()
    return True


def describe(gate: Gate, slugs: list[str]) -> list[dict[str, Any]]:
    """Each campaign's sending state, for the pages that show it."""
    return [
        {
            "slug": slug,
            "paused": gate.holds(slug),
            "paused_here": slug in gate.paused,
            "test_address": gate.test_address(slug),
        }
        for slug in slugs
    ]
