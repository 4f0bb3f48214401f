"""The supporter's interface language: Flask-Babel, with the catalogues in
``campaign/translations/<code>/LC_MESSAGES/messages.po`` (compiled by ``make``).

The language is, in order: ``?lang=`` in the URL (remembered in a cookie), the
cookie, the browser's ``Accept-Language``, English. The letter's language is a
separate choice: a German supporter may send a Spanish letter and still read
every page and mail in German.
"""

from __future__ import annotations

import os
from datetime import date, datetime

from babel.dates import format_date
from flask import Flask, Response, g, has_request_context, request
from flask_babel import Babel, get_locale

INTERFACE_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "ca", "nl")
"""Every language the supporter interface speaks; a catalogue per code but English."""

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
    "it": "Italiano",
    "pt": "Português",
    "ca": "Català",
    "nl": "Nederlands",
}
"""Each language by its own name, for the switcher."""

DEFAULT = "en"
COOKIE = "lang"
TRANSLATIONS = os.path.join(os.path.dirname(__file__), "translations")

babel = Babel()


def supported(code: str | None) -> str | None:
    """The interface language for ``code`` (``fr``, ``fr-CA``, ``FR_be``), or None."""
    if not code:
        return None
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in INTERFACE_LANGUAGES else None


def select_locale() -> str:
    if not has_request_context():  # a worker or a command: mail uses force_locale
        return DEFAULT
    asked = supported(request.args.get(COOKIE))
    if asked:
        g.remember_language = asked
        return asked
    return (
        supported(request.cookies.get(COOKIE))
        or request.accept_languages.best_match(INTERFACE_LANGUAGES)
        or DEFAULT
    )


def current_language() -> str:
    """The interface language of this request (English outside one)."""
    locale = get_locale()
    return str(locale.language) if locale is not None else DEFAULT


def long_date(day: date | datetime) -> str:
    """A date as the interface language writes it in a sentence: "5 September 2013",
    "5 de septiembre de 2013", "5. September 2013" (British order for English)."""
    language = current_language()
    return format_date(day, "long", locale="en_GB" if language == DEFAULT else language)


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.filters["long_date"] = long_date

    @app.context_processor
    def languages() -> dict[str, object]:
        return {
            "ui_lang": current_language(),
            "ui_languages": INTERFACE_LANGUAGES,
            "language_names": LANGUAGE_NAMES,
        }

    @app.after_request
    def remember(response: Response) -> Response:
        chosen = g.pop("remember_language", None)
        if chosen:
            response.set_cookie(
                COOKIE,
                chosen,
                max_age=365 * 24 * 3600,
                samesite="Lax",
                secure=app.config["PUBLIC_URL"].startswith("https://"),
                httponly=True,
            )
        return response
