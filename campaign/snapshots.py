"""What admins change rarely and every supporter's request reads: a campaign's options
and its diplomats, kept by each process for :data:`TTL` seconds.

A submission used to read them three times (the view, the service, the letter's
fingerprint), a third of its time. Now a change an admin makes through the app clears
this process's copies at once (SQLAlchemy's flush events), and reaches the other
processes (gunicorn's, the workers) within :data:`TTL` seconds: a campaign paused or
closed stops taking appeals everywhere within two seconds.

Snapshots are plain read-only objects, not rows: they outlive the request's session.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from threading import Lock
from types import MappingProxyType, SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from .db import db
from .models import AddressChange, CampaignOption, Diplomat

TTL = 2.0
"""Seconds a process keeps a snapshot it read from the database."""


@dataclass(frozen=True)
class DiplomatEntry:
    """A diplomat as letters and addressee blocks use it."""

    id: int
    target_state: str
    country: str
    name: str
    email: str | None
    fax: str | None
    postal_address: str | None


class _Snapshots:
    def __init__(self) -> None:
        self.lock = Lock()
        self.values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, load: Any) -> Any:
        now = time.monotonic()
        found = self.values.get(key)
        if found is not None and now - found[0] < TTL:
            return found[1]
        value = load()
        with self.lock:
            self.values[key] = (now, value)
        return value

    def clear(self) -> None:
        with self.lock:
            self.values.clear()


def _snapshots() -> _Snapshots:
    extensions = current_app.extensions
    found = extensions.get("snapshots")
    if found is None:
        found = extensions["snapshots"] = _Snapshots()
    return found  # type: ignore[no-any-return]


_OPTION_COLUMNS = tuple(c.key for c in inspect(CampaignOption).column_attrs)


def options(slug: str) -> Any:
    """The campaign's switches (defaults if an admin never set any), read-only."""

    def load() -> Any:
        row = db.session.get(CampaignOption, slug)
        if row is None:
            values = {c.key: _default(c) for c in inspect(CampaignOption).column_attrs}
            values["slug"] = slug
        else:
            values = {key: getattr(row, key) for key in _OPTION_COLUMNS}
        return SimpleNamespace(**values)

    return _snapshots().get(("options", slug), load)


def _default(column_attr: Any) -> Any:
    column = column_attr.columns[0]
    default = column.default
    if default is not None and getattr(default, "is_scalar", False):
        return default.arg
    return None


@dataclass(frozen=True)
class ModeEntry:
    """A campaign that does not send one e-mail per supporter (:mod:`campaign.digests`)."""

    slug: str
    mode: str
    digest_hours: int
    daily_cap: int | None


def delivery_modes() -> MappingProxyType[str, ModeEntry]:
    """The campaigns in digest or capped mode, by slug: usually none. The dispatcher
    reads this every pass, so a campaign in the default mode costs it nothing."""
    from .models import Mode

    def load() -> MappingProxyType[str, ModeEntry]:
        rows = db.session.execute(
            db.select(
                CampaignOption.slug,
                CampaignOption.delivery_mode,
                CampaignOption.digest_hours,
                CampaignOption.daily_cap,
            ).where(CampaignOption.delivery_mode.in_((Mode.DIGEST, Mode.CAPPED)))
        )
        return MappingProxyType({r[0]: ModeEntry(r[0], r[1], int(r[2] or 24), r[3]) for r in rows})

    return _snapshots().get(("modes",), load)  # type: ignore[no-any-return]


def diplomats(target_state: str) -> MappingProxyType[str, tuple[DiplomatEntry, ...]]:
    """The diplomats of ``target_state``, by the country they are accredited to."""

    def load() -> MappingProxyType[str, tuple[DiplomatEntry, ...]]:
        by_country: dict[str, list[DiplomatEntry]] = {}
        for d in db.session.scalars(
            db.select(Diplomat)
            .where(Diplomat.target_state == target_state)
            .order_by(Diplomat.country, Diplomat.name)
        ):
            by_country.setdefault(d.country, []).append(
                DiplomatEntry(
                    d.id, d.target_state, d.country, d.name, d.email, d.fax, d.postal_address
                )
            )
        return MappingProxyType({k: tuple(v) for k, v in by_country.items()})

    return _snapshots().get(("diplomats", target_state), load)  # type: ignore[no-any-return]


def addresses(campaign: str | None) -> MappingProxyType[str, str]:
    """Addressees' addresses changed at run time (:mod:`campaign.addresses`) for
    ``campaign`` (its own changes and those for every campaign): old, lower-case → the
    address in force, chains followed."""

    def load() -> MappingProxyType[str, str]:
        from .addresses import resolve

        scope = AddressChange.campaign.is_(None)
        if campaign is not None:
            scope = scope | (AddressChange.campaign == campaign)
        rows = db.session.execute(
            db.select(AddressChange.old_address, AddressChange.new_address)
            .where(scope)
            .order_by(AddressChange.id)
        )
        return MappingProxyType(resolve((r[0], r[1]) for r in rows))

    return _snapshots().get(("addresses", campaign), load)  # type: ignore[no-any-return]


def clear() -> None:
    """Forget this process's snapshots (the next read goes to the database)."""
    with contextlib.suppress(RuntimeError):  # outside an application: nothing is kept
        _snapshots().clear()


def _changed(mapper: Any, connection: Any, target: Any) -> None:
    clear()


@event.listens_for(Session, "do_orm_execute")
def _bulk_change(state: Any) -> None:
    """``update(CampaignOption)`` and ``delete(Diplomat)`` skip the mapper's events."""
    mapper = state.bind_mapper
    changes = state.is_update or state.is_delete
    if changes and mapper is not None and mapper.class_ in _WATCHED:
        clear()


_WATCHED = (CampaignOption, Diplomat, AddressChange)

for _model in _WATCHED:
    for _name in ("after_insert", "after_update", "after_delete"):
        event.listen(_model, _name, _changed)
