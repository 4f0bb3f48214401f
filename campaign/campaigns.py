"""Campaigns are data: one TOML file per Urgent Action, letters in ``templates/email/<slug>/``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from .exceptions import CampaignFileError, UnknownCampaign

LETTER_PARTS = ("subject.txt", "letter.txt", "letter.html")


@dataclass(frozen=True)
class Addressee:
    """Someone the appeal is written to, with every channel the Urgent Action gives."""

    key: str
    role: str  # "to" or "cc"
    name: str
    title: dict[str, str]
    organisation: str = ""
    postal_address: str = ""
    fax: str = ""
    email: str = ""
    salutation: dict[str, str] = field(default_factory=dict)
    timezone: str = "UTC"

    def title_in(self, language: str) -> str:
        return self.title.get(language) or self.title.get("en") or next(iter(self.title.values()))

    def salutation_in(self, language: str) -> str:
        return self.salutation.get(language) or self.salutation.get("en", "")


@dataclass(frozen=True)
class Campaign:
    slug: str
    title: dict[str, str]
    summary: dict[str, str]
    deadline: date | None
    late_notice: dict[str, str]
    languages: tuple[str, ...]
    addressees: tuple[Addressee, ...]
    diplomats_of: str | None = None

    def text(self, attr: str, language: str) -> str:
        values: dict[str, str] = getattr(self, attr)
        return values.get(language) or values.get("en") or next(iter(values.values()), "")

    @property
    def to(self) -> Addressee:
        return next(a for a in self.addressees if a.role == "to")

    @property
    def copies(self) -> tuple[Addressee, ...]:
        return tuple(a for a in self.addressees if a.role == "cc")

    def past_deadline(self, today: date) -> bool:
        return self.deadline is not None and today > self.deadline


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise CampaignFileError(f"{where}: '{key}' is missing")
    value = data[key]
    if not isinstance(value, kind):
        raise CampaignFileError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _addressee(data: dict[str, Any], where: str) -> Addressee:
    role = _require(data, "role", str, where)
    if role not in ("to", "cc"):
        raise CampaignFileError(f"{where}: role must be 'to' or 'cc', not {role!r}")
    known = {f for f in Addressee.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise CampaignFileError(f"{where}: unknown keys {sorted(unknown)}")
    _require(data, "key", str, where)
    _require(data, "name", str, where)
    _require(data, "title", dict, where)
    return Addressee(**data)


def parse_campaign(data: dict[str, Any], where: str, templates: Path) -> Campaign:
    """Build a :class:`Campaign` from a parsed TOML document, checking every field."""
    slug = _require(data, "slug", str, where)
    languages = tuple(_require(data, "languages", list, where))
    if not languages:
        raise CampaignFileError(f"{where}: 'languages' is empty")
    raw_addressees = _require(data, "addressees", list, where)
    addressees = tuple(
        _addressee(dict(a), f"{where} addressee {i + 1}") for i, a in enumerate(raw_addressees)
    )
    if sum(a.role == "to" for a in addressees) != 1:
        raise CampaignFileError(f"{where}: exactly one addressee must have role 'to'")
    if not next(a for a in addressees if a.role == "to").email:
        raise CampaignFileError(f"{where}: the 'to' addressee needs an e-mail address")
    deadline = data.get("deadline")
    if deadline is not None and not isinstance(deadline, date):
        raise CampaignFileError(f"{where}: 'deadline' must be a date like 2013-09-05")
    for language in languages:
        for part in LETTER_PARTS:
            if not (templates / slug / language / part).is_file():
                raise CampaignFileError(
                    f"{where}: letter template email/{slug}/{language}/{part} is missing"
                )
    return Campaign(
        slug=slug,
        title=_require(data, "title", dict, where),
        summary=_require(data, "summary", dict, where),
        deadline=deadline,
        late_notice=dict(data.get("late_notice", {})),
        languages=languages,
        addressees=addressees,
        diplomats_of=data.get("diplomats_of"),
    )


def load_campaigns(directory: Path, templates: Path) -> dict[str, Campaign]:
    """Read every ``*.toml`` campaign in ``directory``; a broken file fails loudly."""
    campaigns: dict[str, Campaign] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise CampaignFileError(f"{path}: {e}") from e
        campaign = parse_campaign(data, str(path), templates)
        if campaign.slug in campaigns:
            raise CampaignFileError(f"{path}: slug {campaign.slug!r} is used twice")
        campaigns[campaign.slug] = campaign
    return campaigns


def init_app(app: Flask) -> None:
    templates = Path(app.root_path) / (app.template_folder or "templates") / "email"
    app.extensions["campaigns"] = load_campaigns(Path(app.config["CAMPAIGNS_DIR"]), templates)


def all_campaigns() -> dict[str, Campaign]:
    return current_app.extensions["campaigns"]  # type: ignore[no-any-return]


def get_campaign(slug: str) -> Campaign:
    try:
        return all_campaigns()[slug]
    except KeyError:
        raise UnknownCampaign(slug) from None
