"""Every addressee by every channel, and the printable letter.

The campaign page and the preview show each addressee's block: name, title, postal
address, fax, e-mail where there is one, and the salutation, in the letter's language.
The printable letter is the supporter's own letter as a PDF, one page per addressee,
for those without e-mail (the Chief Prosecutor) and for anyone who prefers paper or
fax. Nothing here stores or sends anything.

fpdf2 writes the PDF: pure Python, installed from PyPI alone. Its core fonts are
Latin-1 only, so the letter is set in DejaVu Sans, which ships in ``campaign/fonts/``
(Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew, Arabic and more), and needs no
system font. Right-to-left and combining scripts are shaped by HarfBuzz (uharfbuzz),
only when the text holds them: shaping costs four times as much. A character the font
lacks is refused with :class:`Unprintable`, rather than printed as an empty box.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from .campaigns import Addressee, Campaign
from .db import db
from .exceptions import CampaignError
from .letters import (
    COPY_RULE,
    Writer,
    country_name_in,
    diplomats_for,
    letter_for,
    moved_addresses,
)
from .models import Appeal, Diplomat

FONT = Path(__file__).with_name("fonts") / "DejaVuSans.ttf"
FAMILY = "DejaVuSans"

SIZES = (11.0, 10.5, 10.0, 9.5, 9.0, 8.5, 8.0)
"""Font sizes tried, largest first, so that each addressee's letter fits on one page."""
LEADING = 1.4
"""Line height as a multiple of the font size."""
MM_PER_PT = 25.4 / 72

DIPLOMAT_SALUTATIONS = {
    "en": "Your Excellency",
    "es": "Excelencia",
    "fr": "Excellence",
    "de": "Exzellenz",
    "it": "Eccellenza",
    "pt": "Excelência",
    "ca": "Excel·lència",
    "nl": "Excellentie",
}
"""How a letter greets an ambassador, by the letter's language (the diplomats on file
have no salutation of their own)."""

_SHAPED_BIDI = frozenset({"R", "AL", "AN"})
_SHAPED_CATEGORIES = frozenset({"Mn", "Mc", "Me"})


class Unprintable(CampaignError, ValueError):
    """The letter holds characters that the PDF's font cannot show."""

    def __init__(self, characters: str) -> None:
        super().__init__(f"no glyph for {characters!r}")
        self.characters = characters


@dataclass(frozen=True)
class Block:
    """One addressee as the supporter sees them, in the letter's language."""

    key: str
    role: str  # "to", "cc" or "diplomat"
    name: str
    title: str
    organisation: str
    postal_address: str
    fax: str
    email: str
    salutation: str

    @property
    def postal_lines(self) -> list[str]:
        return [line.strip() for line in self.postal_address.splitlines() if line.strip()]

    @property
    def head(self) -> list[str]:
        """The postal block: who, and where a letter reaches them."""
        return [line for line in (self.name, self.title, self.organisation) if line] + (
            self.postal_lines
        )


@dataclass(frozen=True)
class Addressees:
    """What the page shows: the blocks, and whether the supporter's country has no
    diplomat on file (known only once a country is chosen, in the preview)."""

    blocks: list[Block]
    language: str
    missing_diplomats: bool = False
    state_name: str = ""  # whose diplomats (Spain), in the interface language
    country_name: str = ""  # the supporter's country, in the interface language


@dataclass(frozen=True)
class _Person:
    addressee: Addressee
    role: str
    diplomat: Diplomat | None = None


def diplomat_salutation(language: str) -> str:
    return DIPLOMAT_SALUTATIONS.get(language) or DIPLOMAT_SALUTATIONS["en"]


def _diplomat_addressee(diplomat: Diplomat) -> Addressee:
    """A diplomat on file as an addressee, greeted in every language (a letter in one
    language may carry its version in another below it)."""
    return Addressee(
        key=f"diplomat-{diplomat.id}",
        role="cc",
        name=diplomat.name,
        title={"en": ""},
        postal_address=diplomat.postal_address or "",
        fax=diplomat.fax or "",
        email=diplomat.email or "",
        salutation=dict(DIPLOMAT_SALUTATIONS),
    )


def _people(campaign: Campaign, diplomats: Sequence[Diplomat]) -> list[_Person]:
    """The main addressee, the copies, then the diplomats, as the letter lists them;
    the campaign file's at the address in force (:mod:`campaign.addresses`)."""
    moved = moved_addresses(campaign)

    def current(a: Addressee) -> Addressee:
        found = moved.get(a.email.lower())
        return replace(a, email=found) if found else a

    people = [_Person(current(campaign.to), "to")]
    people += [_Person(current(a), "cc") for a in campaign.copies]
    people += [_Person(_diplomat_addressee(d), "diplomat", d) for d in diplomats]
    return people


def _block(person: _Person, language: str) -> Block:
    a = person.addressee
    return Block(
        key=a.key,
        role=person.role,
        name=a.name,
        title=a.title_in(language),
        organisation=a.organisation,
        postal_address=a.postal_address,
        fax=a.fax,
        email=a.email,
        salutation=a.salutation_in(language),
    )


def addressee_blocks(
    campaign: Campaign, language: str, diplomats: Sequence[Diplomat] = ()
) -> list[Block]:
    return [_block(p, language) for p in _people(campaign, diplomats)]


def letter_language(campaign: Campaign, *preferred: str | None) -> str:
    """The first of ``preferred`` that the campaign writes letters in, else its first."""
    return next((p for p in preferred if p in campaign.languages), campaign.languages[0])


def addressees(
    campaign: Campaign,
    language: str,
    country: str | None = None,
    diplomats: Sequence[Diplomat] | None = None,
    ui: str = "en",
) -> Addressees:
    """The blocks for the page, in the letter's ``language``. With a ``country`` (a
    preview), the diplomats on file for it are added, and their absence is said rather
    than left unsaid, naming the countries in the interface language ``ui``."""
    if country is None:
        return Addressees(addressee_blocks(campaign, language), language)
    if diplomats is None:
        diplomats = diplomats_for(campaign, country)
    return Addressees(
        addressee_blocks(campaign, language, diplomats),
        language,
        missing_diplomats=bool(campaign.diplomats_of) and not diplomats,
        state_name=country_name_in(campaign.diplomats_of, ui) if campaign.diplomats_of else "",
        country_name=country_name_in(country, ui),
    )


def letters_for_print(
    campaign: Campaign, writer: Writer, org_name: str, diplomats: Sequence[Diplomat]
) -> list[tuple[Block, str]]:
    """Each addressee with the supporter's letter written to them: the e-mail's text,
    greeting that addressee, with the others in its copy line."""
    language = writer.language
    people = _people(campaign, diplomats)
    pages = []
    for person in people:
        others = [
            replace(p.addressee, role="cc")
            for p in people
            if p is not person and p.diplomat is None
        ]
        written_to = replace(campaign, addressees=(replace(person.addressee, role="to"), *others))
        other_diplomats = [d for d in diplomats if d is not person.diplomat]
        letter = letter_for(written_to, writer, org_name, other_diplomats)
        pages.append((_block(person, language), letter.text))
    return pages


@cache
def _glyphs() -> frozenset[int]:
    font = TTFont(FONT, lazy=True)
    try:
        return frozenset(font.getBestCmap())
    finally:
        font.close()


def unprintable(text: str) -> str:
    """The characters of ``text`` the font has no glyph for, each once, in order."""
    glyphs = _glyphs()
    seen: dict[str, None] = {}
    for ch in text:
        if ord(ch) in glyphs or ch in "\n\t" or unicodedata.category(ch) == "Cf":
            continue
        seen.setdefault(ch, None)
    return "".join(seen)


def _needs_shaping(text: str) -> bool:
    return any(
        unicodedata.bidirectional(ch) in _SHAPED_BIDI
        or unicodedata.category(ch) in _SHAPED_CATEGORIES
        for ch in text
    )


def _locale(language: str, writer: Writer) -> Locale:
    """The letter's language as written in the supporter's country where Babel knows
    that (en_GB dates "30 November 2026", en_US "November 30, 2026"), else as such."""
    try:
        return Locale.parse(f"{language}_{writer.country}")
    except (UnknownLocaleError, ValueError):
        return Locale.parse(language)


def filename(campaign: Campaign) -> str:
    """An ASCII file name that names no one."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", campaign.slug).strip("-")[:60]
    return f"letter-{slug or 'appeal'}.pdf"


def _line_height(size: float) -> float:
    return size * MM_PER_PT * LEADING


def wrap(text: str, widths: Mapping[int, float], width: float) -> list[str]:
    """``text`` in lines no wider than ``width``, in the units of ``widths`` (each
    character's): broken at spaces, and inside a word only if it is wider than a line.

    fpdf2's ``multi_cell`` does this too, but measures each line again for every
    character it adds: two seconds a letter. This measures each word once."""
    lines: list[str] = []
    space = widths[ord(" ")]
    for paragraph in text.split("\n"):
        line: list[str] = []
        used = 0.0
        for word in paragraph.split(" "):
            size = sum(widths[ord(ch)] for ch in word)
            if line and used + space + size > width:
                lines.append(" ".join(line))
                line, used = [], 0.0
            if size > width:  # longer than a line: broken where the line ends
                chunk, used = "", 0.0
                for ch in word:
                    if chunk and used + widths[ord(ch)] > width:
                        lines.append(chunk)
                        chunk, used = "", 0.0
                    chunk += ch
                    used += widths[ord(ch)]
                line = [chunk]
                continue
            used += (space if line else 0.0) + size
            line.append(word)
        lines.append(" ".join(line))
    return lines


class _Sheet:
    """The PDF being written, in one font, measured without fpdf2's line breaking."""

    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf
        pdf.set_font(FAMILY, size=SIZES[0])
        self.widths: Mapping[int, float] = pdf.current_font.cw  # thousandths of the size
        self.width = pdf.epw * 0.98  # shaped text may come out a little wider

    def lines(self, text: str, size: float) -> list[str]:
        return wrap(text, self.widths, self.width / (size * MM_PER_PT) * 1000)

    def count(self, size: float, *texts: str) -> int:
        return sum(len(self.lines(text, size)) for text in texts)

    def fits(self, size: float, top: list[str], head: list[str], parts: list[str]) -> bool:
        """Whether the letter, and each of its versions, fits on a sheet each."""
        height = _line_height(size)
        lines = self.count(size, *top, *head, parts[0]) + 3  # and the blank lines between
        if lines * height > self.pdf.eph:
            return False
        return all(self.count(size, part) * height <= self.pdf.eph for part in parts[1:])

    def fit(self, top: list[str], letters: list[tuple[list[str], list[str]]]) -> float:
        """The largest size at which every letter fits on its sheets, the same for all
        (the smallest else: a letter too long for a sheet then runs on over the next)."""
        sizes = list(SIZES)
        for head, parts in letters:  # each measured from the size the last one fitted at
            while len(sizes) > 1 and not self.fits(sizes[0], top, head, parts):
                sizes.pop(0)
        return sizes[0]

    def write(self, text: str, size: float, align: str = "L") -> None:
        height = _line_height(size)
        for line in self.lines(text, size):
            self.pdf.cell(0, height, line, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def letter(self, size: float, top: list[str], head: list[str], parts: list[str]) -> None:
        """One addressee's letter, on the empty sheet at hand: sender, date, postal block
        and fax, the letter; its version in the copy language, if any, on the next sheet."""
        pdf, height = self.pdf, _line_height(size)
        pdf.set_font(FAMILY, size=size)
        for line in top[:-1]:  # the sender
            self.write(line, size, "R")
        pdf.ln(height)
        self.write(top[-1], size, "R")  # the date
        pdf.ln(height)
        for line in head:
            self.write(line, size)
        pdf.ln(height)
        self.write(parts[0], size)
        for part in parts[1:]:
            pdf.add_page()
            self.write(part, size)


def render_pdf(
    campaign: Campaign,
    writer: Writer,
    org_name: str,
    diplomats: Sequence[Diplomat] | None = None,
    today: date | None = None,
) -> bytes:
    """The supporter's letter as a PDF, a sheet per addressee: the supporter and their
    country as sender, the date, the addressee's postal block and fax, then the letter
    (greeting, body, signature) as the e-mail has it; its version in the campaign's copy
    language, when it carries one, on the next sheet. Raises :class:`Unprintable`."""
    if diplomats is None:
        diplomats = diplomats_for(campaign, writer.country)
    language = writer.language
    dated = format_date(today or date.today(), format="long", locale=_locale(language, writer))
    top = [writer.name, country_name_in(writer.country, language), dated]
    letters = [
        (
            block.head + ([f"Fax: {block.fax}"] if block.fax else []),
            [part.strip("\n") for part in text.split(COPY_RULE)],
        )
        for block, text in letters_for_print(campaign, writer, org_name, diplomats)
    ]
    everything = "\n".join([*top, *(line for head, parts in letters for line in [*head, *parts])])
    missing = unprintable(everything)
    if missing:
        raise Unprintable(missing)

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_margins(25, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_title(campaign.text("title", language))
    pdf.set_lang(language)
    pdf.add_font(FAMILY, "", str(FONT))
    if _needs_shaping(everything):
        pdf.set_text_shaping(True)
    sheet = _Sheet(pdf)
    size = sheet.fit(top, letters)
    for head, parts in letters:
        pdf.add_page()
        sheet.letter(size, top, head, parts)
    return bytes(pdf.output())


def appeal_to_print(public_id: str) -> Appeal | None:
    """The appeal with this public id while its owner's data is kept; None for an
    unknown id and for an erased appeal alike (the answer tells nobody which)."""
    if not public_id or len(public_id) > 36:
        return None
    appeal = db.session.scalar(db.select(Appeal).filter_by(public_id=public_id))
    if appeal is None or appeal.erased_at is not None or not appeal.name:
        return None
    return appeal
