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
from .models import CampaignOption, Diplomat

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
    if changes and mapper is not None and mapper.class_ in (CampaignOption, Diplomat):
        clear()


for _model in (CampaignOption, Diplomat):
    for _name in ("after_insert", "after_update", "after_delete"):
        event.listen(_model, _name, _changed)
