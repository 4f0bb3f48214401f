"""campaign.intake.parse_supporter on its own: every field hostile, no app, no database."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from campaign.campaigns import Campaign, load_campaigns
from campaign.exceptions import InvalidInput
from campaign.intake import EMAIL_MAX, MESSAGE_MAX, NAME_MAX, SupporterInput, parse_supporter
from conftest import ROOT
from helpers import supporter

BIG = "a" * 100 * 1024  # 100 KB


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    campaigns = load_campaigns(ROOT / "urgent-actions", ROOT / Path("templates/email"))
    return campaigns["pavlov-extradition"]


good = supporter  # a valid submission, with overrides


def refused(campaign: Campaign, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_supporter(data, campaign)
    return caught.value.fields


def test_good_input_is_accepted_as_given(campaign):
    assert parse_supporter(good(), campaign) == SupporterInput(
        name="Ana García",
        email="ana@example.org",
        language="es",
        country="GB",
        message="Por favor, actúe ya.",
    )


# --- Things that could end up in a mail header ---------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Ana\r\nBcc: victim@example.com",
        "Ana\rGarcía",
        "Ana\nGarcía",
        "Ana\x00García",
        "Ana\tGarcía",
        "Ana\u2028García",  # LINE SEPARATOR
        "Ana\u2029García",  # PARAGRAPH SEPARATOR
        "Ana \u202egnirts",  # RIGHT-TO-LEFT OVERRIDE
        "Ana \u2067García\u2069",  # RIGHT-TO-LEFT ISOLATE … POP
        "Ana\x1bGarcía",  # ESC
        "Ana\x85García",  # NEL
        "Ana\ud800García",  # lone surrogate
    ],
    ids=repr,
)
def test_name_with_control_or_bidi_characters_is_refused(campaign, name):
    fields = refused(campaign, good(name=name))
    assert fields == {"name": "The name must be a single line without control characters."}


@pytest.mark.parametrize(
    "email",
    [
        "ana@example.org\r\nBcc: victim@example.com",
        "ana\r\n@example.org",
        "ana@exam\rple.org",
        "ana@exam\nple.org",
        "ana\x00@example.org",
        "ana@example.org\x00x",
        "ana\t@example.org",
        "ana\u2028@example.org",
        "ana\u202e@example.org",
    ],
    ids=repr,
)
def test_email_with_control_characters_is_refused(campaign, email):
    fields = refused(campaign, good(email=email))
    assert set(fields) == {"email"}


@pytest.mark.parametrize("field", ["name", "email", "country", "language", "message"])
def test_surrounding_whitespace_and_line_ends_are_trimmed_not_kept(campaign, field):
    value = {"name": "Ana", "email": "ana@example.org", "country": "GB", "language": "es"}.get(
        field, "Hello"
    )
    parsed = parse_supporter(good(**{field: f"  \r\n{value}\r\n\t "}), campaign)
    assert getattr(parsed, field) == value


# --- Size -------------------------------------------------------------------------------


def test_100_kb_in_every_field_is_refused_field_by_field(campaign):
    data = good(name=BIG, email=BIG + "@example.org", language=BIG, country=BIG, message=BIG)
    data["consent"] = BIG
    fields = refused(campaign, data)
    assert fields == {
        "name": f"Must be at most {NAME_MAX} characters.",
        "email": f"Must be at most {EMAIL_MAX} characters.",
        "language": "Must be at most 8 characters.",
        "country": "Must be at most 8 characters.",
        "message": f"Must be at most {MESSAGE_MAX} characters.",
        "consent": "Please agree that we send this appeal in your name.",
    }


def test_longest_name_is_accepted_and_one_more_is_not(campaign):
    assert parse_supporter(good(name="n" * NAME_MAX), campaign).name == "n" * NAME_MAX
    assert set(refused(campaign, good(name="n" * (NAME_MAX + 1)))) == {"name"}


def test_message_too_long_is_refused(campaign):
    assert parse_supporter(good(message="m" * MESSAGE_MAX), campaign).message == "m" * MESSAGE_MAX
    fields = refused(campaign, good(message="m" * (MESSAGE_MAX + 1)))
    assert fields == {"message": f"Must be at most {MESSAGE_MAX} characters."}


def test_message_line_ends_count_once_as_the_browser_counts_them(campaign):
    # A browser's maxlength counts a line break as one character but submits it as CRLF.
    lines = ["x" * 99] * 10  # 990 characters + 9 line breaks = 999
    as_submitted = "\r\n".join(lines)
    assert len(as_submitted) > MESSAGE_MAX
    parsed = parse_supporter(good(message=as_submitted), campaign)
    assert parsed.message == "\n".join(lines)


# --- Text that is odd but fine ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "O'Brien & Sons",
        '"Ana" García, Jr.',
        "😀 Ana",
        "👩👩👧 Familia García",  # without the joiners, which are format characters
        "Ana 🇪🇸",
        "Aleksandr Pavlov Александр",
        "José Ñúñez",
        "李小龍",
        "محمد",
    ],
)
def test_odd_but_harmless_names_are_accepted_verbatim(campaign, name):
    # HTML is escaped where it is shown; quotes and commas are quoted in headers.
    assert parse_supporter(good(name=name), campaign).name == name


@pytest.mark.parametrize(
    "name",
    [
        "Ministro de Justicia <ministro@mju.es>",
        "ministro@mju.es",
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "Ana > Bob",
    ],
)
def test_names_that_could_pose_as_an_address_are_refused(campaign, name):
    assert refused(campaign, good(name=name)) == {"name": "The name may not contain <, > or @."}


@pytest.mark.parametrize(
    "char",
    [
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u2060",  # word joiner
        "\u00ad",  # soft hyphen
        "\ufeff",  # byte-order mark
        "\u061c",  # Arabic letter mark
        "\U000e0041",  # tag letter A
        "\u202e",  # right-to-left override
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_names_with_format_characters_are_refused(campaign, char):
    fields = refused(campaign, good(name=f"Ana{char} García"))
    assert fields == {"name": "The name must be a single line without control characters."}


@pytest.mark.parametrize(
    ("field", "decomposed"),
    [
        ("name", "Jose\u0301 Nun\u0303ez"),
        ("message", "Gracias, Jose\u0301."),
    ],
)
def test_combining_characters_are_normalised_to_nfc(campaign, field, decomposed):
    value = getattr(parse_supporter(good(**{field: decomposed}), campaign), field)
    assert value == unicodedata.normalize("NFC", decomposed)
    assert value != decomposed
    assert "\u0301" not in value and "\u0303" not in value


def test_message_line_ends_are_normalised_and_it_may_span_lines(campaign):
    parsed = parse_supporter(good(message="One.\r\nTwo.\rThree.\nFour."), campaign)
    assert parsed.message == "One.\nTwo.\nThree.\nFour."


@pytest.mark.parametrize("message", ["Hi\x00there", "Hi\tthere", "Hi\u2028there", "\u202eHi"])
def test_message_with_other_control_characters_is_refused(campaign, message):
    fields = refused(campaign, good(message=message))
    assert fields == {"message": "The message contains control characters."}


@pytest.mark.parametrize("message", [None, "", "   ", "\r\n", ...])
def test_message_is_optional(campaign, message):
    assert parse_supporter(good(message=message), campaign).message is None


# --- E-mail -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "ana",
        "ana@",
        "@example.org",
        "ana@@example.org",
        "ana@example",
        "ana example@example.org",
        "Ana <ana@example.org>",
        "ana@example.org, eve@example.org",
        "ana@-example.org",
        "ana..garcia@example.org",
    ],
)
def test_invalid_email_is_refused(campaign, email):
    fields = refused(campaign, good(email=email))
    assert set(fields) == {"email"}
    assert fields["email"]


def test_email_is_stored_lower_case(campaign):
    assert parse_supporter(good(email="Ana@Example.ORG"), campaign).email == "ana@example.org"


def test_idn_domain_is_accepted_in_the_form_a_relay_can_take(campaign):
    # Headers and the SMTP envelope are ASCII: the domain goes out as its A-label.
    email = parse_supporter(good(email="ana@bücher.example"), campaign).email
    assert email == "ana@xn--bcher-kva.example"
    assert email.isascii()


def test_non_ascii_local_part_is_refused_with_a_reason(campaign):
    # It would need SMTPUTF8 from every relay on the way; refuse now rather than never send.
    fields = refused(campaign, good(email="anä@example.org"))
    assert set(fields) == {"email"}
    assert "@-sign" in fields["email"]


# --- Language and country -----------------------------------------------------------------


def test_unknown_language_is_refused_with_the_offered_ones(campaign):
    fields = refused(campaign, good(language="xx"))
    offered = "en, es, fr, de, it, pt, ca, nl"
    assert fields == {"language": f"Unknown language code; choose one of: {offered}."}


def test_known_language_not_offered_is_named_in_the_message(campaign):
    fields = refused(campaign, good(language="ru"))
    assert "Russian" in fields["language"]
    assert "en, es, fr, de, it, pt, ca, nl" in fields["language"]


def test_language_code_is_case_insensitive(campaign):
    assert parse_supporter(good(language="EN"), campaign).language == "en"


@pytest.mark.parametrize(("given", "stored"), [("gb", "GB"), ("GB", "GB"), (" es ", "ES")])
def test_country_code_is_upper_cased(campaign, given, stored):
    assert parse_supporter(good(country=given), campaign).country == stored


@pytest.mark.parametrize("country", ["ZZ", "XX", "GBR", "UK", "United Kingdom", "G", "Ǵb"])
def test_unknown_country_is_refused(campaign, country):
    fields = refused(campaign, good(country=country))
    assert set(fields) == {"country"}


# --- Consent --------------------------------------------------------------------------------


@pytest.mark.parametrize("consent", [..., None, False, "false", "no", "off", "0", "", 0, 1, [1]])
def test_anything_but_a_clear_yes_is_no_consent(campaign, consent):
    fields = refused(campaign, good(consent=consent))
    assert fields == {"consent": "Please agree that we send this appeal in your name."}


@pytest.mark.parametrize("consent", [True, "yes", "y", "on", "true", "TRUE", " 1 "])
def test_consent_as_true_or_a_form_checkbox_string(campaign, consent):
    assert parse_supporter(good(consent=consent), campaign).name == "Ana García"


# --- Wrong JSON types -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "email", "language", "country", "message"])
@pytest.mark.parametrize("value", [42, 4.2, True, ["Ana"], {"first": "Ana"}])
def test_non_text_values_are_refused(campaign, field, value):
    assert refused(campaign, good(**{field: value})) == {field: "Must be text."}


@pytest.mark.parametrize("field", ["name", "email", "language", "country"])
@pytest.mark.parametrize("value", [None, "", "   ", ...])
def test_required_fields(campaign, field, value):
    assert refused(campaign, good(**{field: value})) == {field: "This field is required."}


@pytest.mark.parametrize("data", [[], ["name", "Ana"], "Ana", 42, None])
def test_not_an_object_is_refused(campaign, data):
    assert refused(campaign, data) == {"_": "Expected a JSON object."}


def test_every_bad_field_is_reported_at_once(campaign):
    fields = refused(
        campaign,
        {
            "name": "Ana\r\nBcc: victim@example.com",
            "email": "not an address",
            "language": "ru",
            "country": "ZZ",
            "message": "m" * (MESSAGE_MAX + 1),
            "consent": "false",
        },
    )
    assert set(fields) == {"name", "email", "language", "country", "message", "consent"}


def test_an_empty_object_lists_every_required_field(campaign):
    assert set(refused(campaign, {})) == {"name", "email", "language", "country", "consent"}
