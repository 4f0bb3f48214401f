"""Supporter input: one validator for the HTML form and the JSON API.

Every field can be hostile. Anything that could end up in a mail header is
refused if it holds a control character, so a name can never add a header.

Messages are in the supporter's interface language (Flask-Babel; English outside a
request); the field names they are keyed by never change.
"""

from __future__ import annotations

import gettext
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import pycountry
from babel import Locale
from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _

from .campaigns import Campaign
from .exceptions import InvalidInput
from .i18n import INTERFACE_LANGUAGES, current_language, supported

NAME_MAX = 120
EMAIL_MAX = 254
MESSAGE_MAX = 1000

# Bidirectional overrides and isolates let a name display as something it is not.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_TRUE_STRINGS = {"true", "on", "yes", "y", "1"}


@dataclass(frozen=True)
class SupporterInput:
    name: str
    email: str
    language: str
    country: str
    message: str | None
    locale: str | None = None
    """The supporter's interface language: their mail and pages speak it."""


NAME_FORBIDDEN = "<>@"


def _has_format(text: str) -> bool:
    """Unicode format characters (category Cf): bidi controls, zero-width joiners and
    spaces, soft hyphens, tags. None belongs in a name, and they make one display as
    something it is not."""
    return any(unicodedata.category(ch) == "Cf" for ch in text)


def _has_control(text: str, allow_newline: bool = False) -> bool:
    for ch in text:
        if allow_newline and ch == "\n":
            continue
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            return True
    return False


def _text(
    data: Mapping[str, Any],
    key: str,
    errors: dict[str, str],
    required: bool = True,
    maximum: int = 200,
) -> str | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            errors[key] = _("This field is required.")
        return None
    if not isinstance(value, str):
        errors[key] = _("Must be text.")
        return None
    value = unicodedata.normalize("NFC", value.strip())
    # Browsers count a line break as one character but submit it as CRLF.
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if len(value) > maximum:
        errors[key] = _("Must be at most %(maximum)s characters.", maximum=maximum)
        return None
    return value


def country_name(code: str) -> str | None:
    """The English short name of an ISO 3166-1 alpha-2 code, or None if unknown."""
    found = pycountry.countries.get(alpha_2=code) if len(code) == 2 and code.isascii() else None
    return found.name if found else None


def _collation_key(name: str) -> str:
    """Sort "Österreich" with the O's and "Émirats" with the E's."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@cache
def countries(language: str = "en") -> list[tuple[str, str]]:
    """All ISO 3166-1 countries as (alpha-2, name) in ``language`` (pycountry's
    iso3166-1 catalogue; English where it has no name), sorted by name."""
    names = gettext.translation(
        "iso3166-1", pycountry.LOCALES_DIR, languages=[language], fallback=True
    )
    return sorted(
        ((c.alpha_2, names.gettext(c.name)) for c in pycountry.countries),
        key=lambda c: _collation_key(c[1]),
    )


def language_name(code: str) -> str | None:
    found = pycountry.languages.get(alpha_2=code) if len(code) == 2 and code.isascii() else None
    return found.name if found else None


@cache
def language_name_in(code: str, language: str, capitalised: bool = True) -> str | None:
    """A language's name in another (``es`` in French: "espagnol"), capitalised for a
    list entry ("Espagnol") unless asked not to; None for a code neither Babel nor
    ISO 639 knows."""
    try:
        name = Locale.parse(language).languages.get(code)
    except (ValueError, TypeError):
        name = None
    name = name or language_name(code)
    if name and capitalised:
        name = name[:1].upper() + name[1:]
    return name


def normalise_email(value: str, check_deliverability: bool) -> str:
    """Validate an address and return its normalised ASCII form; raises ``EmailNotValidError``.

    Addresses go into ASCII headers and the SMTP envelope: an internationalised
    domain is kept as its IDNA A-label, and a non-ASCII local part (which would
    need SMTPUTF8 all the way) is refused. Mailbox providers treat local parts
    case-insensitively in practice, so the address is stored lower-case.
    """
    if _has_control(value):
        raise EmailNotValidError("The address contains a control character.")
    result = validate_email(value, check_deliverability=check_deliverability, allow_smtputf8=False)
    # Lower-cased whole: "one appeal per supporter" and staff log-ins must not hinge
    # on how someone typed their address today.
    return (result.ascii_email or result.normalized).lower()


def parse_supporter(
    data: Mapping[str, Any],
    campaign: Campaign,
    check_deliverability: bool = False,
    locale: str | None = None,
) -> SupporterInput:
    """Validate raw input; raise :class:`InvalidInput` listing every bad field at once.

    ``locale`` is the interface language to store with the appeal; an optional
    ``"locale"`` in the data (the JSON API's) takes its place.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput({"_": _("Expected a JSON object.")})
    errors: dict[str, str] = {}

    name = _text(data, "name", errors, maximum=NAME_MAX)
    if name is not None and (_has_control(name) or _has_format(name)):
        errors["name"] = _("The name must be a single line without control characters.")
        name = None
    elif name is not None and any(c in name for c in NAME_FORBIDDEN):
        # A name like "Ministro de Justicia <ministro@mju.es>" would pose as an address
        # in the From line of the appeal it signs.
        errors["name"] = _("The name may not contain <, > or @.")
        name = None

    email = _text(data, "email", errors, maximum=EMAIL_MAX)
    if email is not None:
        try:
            email = normalise_email(email, check_deliverability)
        except EmailNotValidError as e:
            errors["email"] = email_error(e)
            email = None

    language = _text(data, "language", errors, maximum=8)
    if language is not None:
        language = language.lower()
        if language not in campaign.languages:
            offered = ", ".join(campaign.languages)
            known = language_name(language) and language_name_in(
                language, current_language(), capitalised=False
            )
            errors["language"] = (
                _(
                    "Letters in %(language)s are not available yet; choose one of: %(offered)s.",
                    language=known,
                    offered=offered,
                )
                if known
                else _("Unknown language code; choose one of: %(offered)s.", offered=offered)
            )
            language = None

    country = _text(data, "country", errors, maximum=8)
    if country is not None:
        country = country.upper()
        if country_name(country) is None:
            errors["country"] = _("Unknown country; use an ISO 3166-1 alpha-2 code such as GB.")
            country = None

    message = _text(data, "message", errors, required=False, maximum=MESSAGE_MAX)
    if message is not None and _has_control(message, allow_newline=True):
        errors["message"] = _("The message contains control characters.")
        message = None

    consent = data.get("consent")
    if isinstance(consent, str):
        consent = consent.strip().lower() in _TRUE_STRINGS
    if consent is not True:
        errors["consent"] = _("Please agree that we send this appeal in your name.")

    if "locale" in data and data["locale"] is not None:
        asked = data["locale"]
        chosen = supported(asked) if isinstance(asked, str) and len(asked) <= 35 else None
        if chosen is None:
            errors["locale"] = _(
                "Unknown interface language; choose one of: %(offered)s.",
                offered=", ".join(INTERFACE_LANGUAGES),
            )
        locale = chosen
    elif locale is not None:
        locale = supported(locale)

    if errors:
        raise InvalidInput(errors)
    assert name and email and language and country
    return SupporterInput(
        name=name,
        email=email,
        language=language,
        country=country,
        message=message or None,
        locale=locale,
    )


def email_error(error: EmailNotValidError) -> str:
    """email-validator says precisely what is wrong, in English: English pages show
    its words; other languages a sentence of their own."""
    if current_language() == "en":
        return str(error)
    return _("Please enter a valid e-mail address, such as name@example.org.")
