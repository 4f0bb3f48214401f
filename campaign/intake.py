"""Supporter input: one validator for the HTML form and the JSON API.

Every field can be hostile. Anything that could end up in a mail header is
refused if it holds a control character, so a name can never add a header.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pycountry
from email_validator import EmailNotValidError, validate_email

from .campaigns import Campaign
from .exceptions import InvalidInput

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
            errors[key] = "This field is required."
        return None
    if not isinstance(value, str):
        errors[key] = "Must be text."
        return None
    value = unicodedata.normalize("NFC", value.strip())
    # Browsers count a line break as one character but submit it as CRLF.
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if len(value) > maximum:
        errors[key] = f"Must be at most {maximum} characters."
        return None
    return value


def country_name(code: str) -> str | None:
    """The English short name of an ISO 3166-1 alpha-2 code, or None if unknown."""
    found = pycountry.countries.get(alpha_2=code) if len(code) == 2 and code.isascii() else None
    return found.name if found else None


def countries() -> list[tuple[str, str]]:
    """All ISO 3166-1 countries as (alpha-2, name), sorted by name."""
    return sorted(((c.alpha_2, c.name) for c in pycountry.countries), key=lambda c: c[1])


def language_name(code: str) -> str | None:
    found = pycountry.languages.get(alpha_2=code) if len(code) == 2 and code.isascii() else None
    return found.name if found else None


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
    data: Mapping[str, Any], campaign: Campaign, check_deliverability: bool = False
) -> SupporterInput:
    """Validate raw input; raise :class:`InvalidInput` listing every bad field at once."""
    if not isinstance(data, Mapping):
        raise InvalidInput({"_": "Expected a JSON object."})
    errors: dict[str, str] = {}

    name = _text(data, "name", errors, maximum=NAME_MAX)
    if name is not None and (_has_control(name) or _has_format(name)):
        errors["name"] = "The name must be a single line without control characters."
        name = None
    elif name is not None and any(c in name for c in NAME_FORBIDDEN):
        # A name like "Ministro de Justicia <ministro@mju.es>" would pose as an address
        # in the From line of the appeal it signs.
        errors["name"] = "The name may not contain <, > or @."
        name = None

    email = _text(data, "email", errors, maximum=EMAIL_MAX)
    if email is not None:
        try:
            email = normalise_email(email, check_deliverability)
        except EmailNotValidError as e:
            errors["email"] = str(e)
            email = None

    language = _text(data, "language", errors, maximum=8)
    if language is not None:
        language = language.lower()
        if language not in campaign.languages:
            offered = ", ".join(campaign.languages)
            known = language_name(language)
            errors["language"] = (
                f"Letters in {known} are not available yet; choose one of: {offered}."
                if known
                else f"Unknown language code; choose one of: {offered}."
            )
            language = None

    country = _text(data, "country", errors, maximum=8)
    if country is not None:
        country = country.upper()
        if country_name(country) is None:
            errors["country"] = "Unknown country; use an ISO 3166-1 alpha-2 code such as GB."
            country = None

    message = _text(data, "message", errors, required=False, maximum=MESSAGE_MAX)
    if message is not None and _has_control(message, allow_newline=True):
        errors["message"] = "The message contains control characters."
        message = None

    consent = data.get("consent")
    if isinstance(consent, str):
        consent = consent.strip().lower() in _TRUE_STRINGS
    if consent is not True:
        errors["consent"] = "Please agree that we send this appeal in your name."

    if errors:
        raise InvalidInput(errors)
    assert name and email and language and country
    return SupporterInput(
        name=name, email=email, language=language, country=country, message=message or None
    )
