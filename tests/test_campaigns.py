"""Campaigns are data: a new Urgent Action is a TOML file and its letters, no Python."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from campaign.campaigns import load_campaigns
from campaign.exceptions import CampaignFileError

ROOT = Path(__file__).resolve().parent.parent

SECOND = """
slug = "second-action"
deadline = 2026-12-31
languages = ["en"]
[title]
en = "A second Urgent Action"
[summary]
en = "Someone else at risk."
[late_notice]
en = "Ask your section first."
[[addressees]]
key = "president"
role = "to"
name = "The President"
title = { en = "President" }
email = "president@gov.example"
salutation = { en = "Your Excellency" }
[[addressees]]
key = "ombudsman"
role = "cc"
name = "The Ombudsman"
title = { en = "Ombudsman" }
salutation = { en = "Dear Ombudsman" }
fax = "+1 555 0100"
"""

WORDING = """
salutation_end = ","
closing = "Yours sincerely,"
copies_label = "Copies to:"
subjects = ["Please act", "Act now"]
paragraphs = [["Please act.", "Please do act."], ["Thank you.", "With thanks."]]
"""


@pytest.fixture
def dirs(tmp_path):
    actions, templates = tmp_path / "urgent-actions", tmp_path / "email"
    shutil.copytree(ROOT / "urgent-actions", actions)
    shutil.copytree(ROOT / "templates" / "email", templates)
    return actions, templates


def _letters(templates: Path, slug: str, language: str = "en") -> None:
    folder = templates / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{language}.toml").write_text(WORDING)


def test_the_seed_is_the_first_campaign(dirs):
    campaign = load_campaigns(*dirs)["pavlov-extradition"]
    assert campaign.deadline == date(2013, 9, 5)
    assert campaign.languages == ("en", "es", "fr", "de", "it", "pt", "ca", "nl")
    assert campaign.copy_language == "es"
    assert campaign.to.email == "ministro@mju.es"
    assert campaign.to.salutation_in("es") == "Sr. Ministro"
    [prosecutor] = campaign.copies
    assert prosecutor.email == "" and prosecutor.fax and prosecutor.postal_address
    assert campaign.diplomats_of == "ES"
    assert "section office" in campaign.text("late_notice", "en")


def test_a_second_campaign_is_files_only(dirs):
    actions, templates = dirs
    (actions / "second-action.toml").write_text(SECOND)
    _letters(templates, "second-action")
    campaigns = load_campaigns(actions, templates)
    assert set(campaigns) == {"pavlov-extradition", "second-action"}
    second = campaigns["second-action"]
    assert second.to.email == "president@gov.example"
    assert second.copies[0].fax == "+1 555 0100"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('slug = "second-action"', ""), "'slug' is missing"),
        (lambda t: t.replace('role = "to"', 'role = "bcc"'), "role must be 'to' or 'cc'"),
        (lambda t: t.replace('email = "president@gov.example"', ""), "needs an e-mail"),
        (lambda t: t.replace("deadline = 2026-12-31", 'deadline = "soon"'), "must be a date"),
        (
            lambda t: t.replace('languages = ["en"]', 'languages = ["en", "fr"]'),
            "title' has no text for fr",
        ),
        (
            lambda t: t.replace('\nen = "Ask your section first."', ""),
            "'late_notice' has no text for en",
        ),
        (
            lambda t: t.replace('salutation = { en = "Dear Ombudsman" }', ""),
            "addressee 2 (ombudsman): 'salutation' has no text for en",
        ),
        (
            lambda t: t.replace('languages = ["en"]', 'languages = ["en"]\ncopy_language = "es"'),
            "'copy_language' 'es' is not one of 'languages'",
        ),
        (
            lambda t: (
                t + "\n[[addressees]]\nkey='x'\nrole='cc'\nname='X'\ntitle={en='X'}\nmood='?'"
            ),
            "unknown keys ['mood']",
        ),
        (lambda t: t.replace("[title]", "[title"), "second-action.toml"),
    ],
)
def test_a_broken_campaign_file_fails_loudly_naming_it(dirs, change, message):
    actions, templates = dirs
    (actions / "second-action.toml").write_text(change(SECOND))
    _letters(templates, "second-action")
    with pytest.raises(CampaignFileError) as caught:
        load_campaigns(actions, templates)
    assert message in str(caught.value)
    assert "second-action.toml" in str(caught.value)
