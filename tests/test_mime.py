"""campaign.mime: the hand-built messages must be what a strict RFC 5322/2045/2047
reader expects, whatever a supporter types as their name."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy
from email.header import decode_header
from email.message import EmailMessage, Message
from email.utils import getaddresses

import pytest

from campaign import mime

SENDER = ("Amnesty Test Section", "appeals@amnesty.test")
TO = [("Sr. D. Alberto Ruiz-Gallardón", "ministro@mju.es")]
CC = [("Embassy of Spain in London", "emb.londres@maec.test")]


def build(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "sender": SENDER,
        "reply_to": ("Ana García", "ana@example.org"),
        "to": TO,
        "cc": CC,
        "subject": "Do not extradite Aleksandr Pavlov",
        "text": "Dear Minister,\n\nPlease act.\n",
        "html": "<p>Dear Minister,</p><p>Please act.</p>\n",
        "message_id": "<0123456789abcdef@amnesty.test>",
        "date": 1_700_000_000.0,
    }
    args.update(overrides)
    return mime.build(**args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def raw_headers(data: bytes) -> Message:
    """The headers exactly as sent (compat32 leaves values undecoded, folds included)."""
    return message_from_bytes(data, policy=policy.compat32)


def head_lines(data: bytes) -> list[bytes]:
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, "no blank line between header and body"
    return head.split(b"\r\n")


def unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def rfc_display_name(raw_mailbox: str) -> str:
    """The display name of one raw ``name <addr>`` as an RFC 2047/5322 reader sees it.

    Encoded words are decoded with ``email.header.decode_header``, which joins
    adjacent encoded words without the folding white space between them, as
    RFC 2047 section 6.2 requires; a quoted string is unquoted.
    """
    value = unfold(raw_mailbox).strip()
    phrase, sep, _ = value.rpartition(" <")
    assert sep, f"no angle address in {value!r}"
    if phrase.startswith("=?"):
        parts = decode_header(phrase)
        return "".join(
            chunk.decode(charset or "ascii") if isinstance(chunk, bytes) else chunk
            for chunk, charset in parts
        )
    if phrase.startswith('"'):
        assert phrase.endswith('"') and len(phrase) >= 2, phrase
        return re.sub(r"\\(.)", r"\1", phrase[1:-1], flags=re.DOTALL)
    return phrase


def addresses(msg: Message, name: str) -> list[str]:
    return [addr for _, addr in getaddresses([str(v) for v in msg.get_all(name, [])])]


# --- line endings and lengths ------------------------------------------------------------


def test_crlf_line_endings_throughout():
    data = build(
        text="one\ntwo\r\nthree\rfour\n" + "x" * 300,
        html="<p>one</p>\n<p>two</p>\r\n",
        to=[("Алексей Навальный " * 5, "ministro@mju.es")],
    )
    assert b"\n" in data
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert data.endswith(b"\r\n")


@pytest.mark.parametrize(
    "body",
    [
        "x" * 5000,
        "ü" * 5000,
        "word " * 1000,
        "🎉" * 2000,
        "=" * 5000,
        " " * 4999 + "x",
    ],
    ids=["ascii", "latin", "words", "emoji", "equals", "spaces"],
)
def test_no_line_over_998_even_with_one_huge_body_line(body):
    data = build(text=body, html=f"<p>{body}</p>")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    # Quoted-printable keeps every body line within 76 characters.
    _, _, body_bytes = data.partition(b"\r\n\r\n")
    assert max(len(line) for line in body_bytes.split(b"\r\n")) <= 76
    msg = parse(data)
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == body
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == f"<p>{body}</p>"


def _max_head_line(data: bytes) -> int:
    return max(len(line) for line in head_lines(data))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="typical"),
        pytest.param(
            {"to": TO * 3, "cc": CC * 4, "reply_to": ("Zoë", "zoe@example.org")},
            id="short-non-ascii-names",
        ),
        pytest.param(
            {"subject": "Les pido que detengan la extradición de Aleksandr Pavlov"},
            id="real-spanish-subject",
        ),
        pytest.param({"subject": "Ñ" * 60}, id="long-non-ascii-subject"),
        pytest.param({"subject": "Please " * 30}, id="long-ascii-subject"),
        pytest.param(
            {"sender": ("José Pérez via Amnesty International Spain", "appeals@es.amnesty.test")},
            id="spanish-supporter-in-from",
        ),
        pytest.param(
            {"reply_to": ("María José Fernández-Gutiérrez", "maria.jose@example.org")},
            id="spanish-supporter-in-reply-to",
        ),
        pytest.param({"reply_to": ("A" * 120, "supporter@example.org")}, id="long-ascii-name"),
        pytest.param(
            {"reply_to": ("José María Pérez", "jose.maria.perez@example.org")},
            id="one-word-encoded-name-in-reply-to",
        ),
        pytest.param(
            {"reply_to": ('Ana "Nana" Smith, Jr., xxxxxxxxxxxxxxxxxxxxx', "someone@example.org")},
            id="quoted-ascii-name-with-escapes",
        ),
    ],
)
def test_header_lines_within_78(overrides):
    data = build(**overrides)
    assert _max_head_line(data) <= 78, [line for line in head_lines(data) if len(line) > 78]


def test_header_lines_within_78_for_names_of_every_length():
    too_long = []
    for unit in ("x", "x,", 'x"', "é", "Ж", "🎉", "Ж "):
        for length in range(1, 121):
            name = (unit * length)[:length]
            for addr in ("a@mju.es", "someone@example.org", "jose.maria.perez@example.org"):
                data = build(
                    sender=(name, addr), to=[(name, addr)], cc=[(name, addr)], reply_to=(name, addr)
                )
                too_long += [line for line in head_lines(data) if len(line) > 78]
    assert too_long == []


@pytest.mark.parametrize(
    "name",
    ["A" * 120, "Ж" * 120, "🎉" * 120, ("Алексей Навальный " * 7).strip()],
    ids=["ascii", "cyrillic", "emoji", "words"],
)
def test_header_lines_within_998_for_the_longest_names(name):
    data = build(
        sender=(f"{name} via Amnesty Test Section", "appeals@amnesty.test"),
        reply_to=(name, "supporter@example.org"),
        subject=name + " " + name,
    )
    assert _max_head_line(data) <= 998
    msg = parse(data)
    assert msg["Reply-To"].addresses[0].addr_spec == "supporter@example.org"


# --- display names -----------------------------------------------------------------------

NAMES = [
    "Ana García",
    'Ana "Ñ" García, Jr.',
    "O'Brien, Seán",
    'She said "hi"',
    "back\\slash",
    'tricky \\" quote',
    "<angle@brackets.example>",
    "Name <evil@example.com>",
    "semi; colon: (comment) [bracket]",
    "trailing dot.",
    " leading space",
    "Алекса́ндр Сергеевич Пушкин",
    "Пётр Ильич Чайковский, композитор (1840–1893) " * 2,
    "東京 太郎",
    "毛泽东思想万岁" * 10,
    "🎉 Party 👩‍👩‍👧 family",
    "e\u0301 cafe\u0301 a\u0308\u0301\u0323 stacked",  # combining marks, not NFC
    'Zoë "the" <best>, d\'Arc \\ ok',
    "x@evil.example, Bcc: y",
    "tab\tinside",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("header", ["From", "To", "Cc", "Reply-To"])
def test_display_names_round_trip_exactly(name, header):
    addr = "someone@example.org"
    data = build(
        sender=(name, addr) if header == "From" else SENDER,
        to=[(name, addr)] if header == "To" else TO,
        cc=[(name, addr)] if header == "Cc" else CC,
        reply_to=(name, addr) if header == "Reply-To" else None,
    )
    raw = raw_headers(data)
    assert len(raw.get_all(header)) == 1
    assert rfc_display_name(raw[header]) == name
    # The parsed header carries exactly one mailbox, the right one.
    assert addresses(parse(data), header) == [addr]


@pytest.mark.parametrize("name", [n for n in NAMES if n.isascii() and n.isprintable()])
def test_ascii_names_also_round_trip_through_the_stdlib_parser(name):
    msg = parse(build(reply_to=(name, "someone@example.org")))
    [mailbox] = msg["Reply-To"].addresses
    assert mailbox.display_name == name
    assert mailbox.addr_spec == "someone@example.org"


def test_plain_names_are_not_quoted_or_encoded():
    assert mime.address("Ana Garcia", "ana@example.org") == "Ana Garcia <ana@example.org>"
    assert mime.address("", "ana@example.org") == "ana@example.org"
    assert mime.address("Ana, Jr.", "a@example.org") == '"Ana, Jr." <a@example.org>'
    assert mime.address('a"b\\c', "a@example.org") == '"a\\"b\\\\c" <a@example.org>'
    assert mime.address("Ana García", "a@example.org").startswith("=?utf-8?b?")


@pytest.mark.parametrize(
    "name",
    [
        "x@evil.example, Bcc: y@evil.example",
        "x@evil.example>, <y@evil.example",
        '"x@evil.example" <x@evil.example>, y',
        "Evil\r\nBcc: y@evil.example",
        "Evil\nCc: y@evil.example",
        "Evil\rTo: y@evil.example",
        "Evil\x00\r\n\r\nbody",
        "Бcc, x@evil.example; y@evil.example",
        "=?utf-8?q?x=40evil.example=2C?= <x@evil.example>",
    ],
)
def test_a_name_never_adds_a_recipient_or_a_header(name):
    clean = raw_headers(build())
    data = build(
        sender=(f"{name} via Amnesty", "appeals@amnesty.test"),
        reply_to=(name, "ana@example.org"),
        to=[(name, "ministro@mju.es")],
        cc=[(name, "emb.londres@maec.test")],
    )
    # compat32 leaves encoded words alone: CPython's modern parser refuses to build an
    # address whose decoded name holds CR or LF, but the structure is what matters here.
    msg = raw_headers(data)
    assert addresses(msg, "To") == ["ministro@mju.es"]
    assert addresses(msg, "Cc") == ["emb.londres@maec.test"]
    assert addresses(msg, "Bcc") == []
    assert addresses(msg, "From") == ["appeals@amnesty.test"]
    assert addresses(msg, "Reply-To") == ["ana@example.org"]
    assert msg.keys() == clean.keys()
    assert not msg.defects
    text, html = (p.get_payload(decode=True) for p in msg.get_payload())
    assert (text, html) == tuple(p.get_payload(decode=True) for p in clean.get_payload())
    assert rfc_display_name(msg["To"]) == name
    assert rfc_display_name(msg["Reply-To"]) == name


def test_several_recipients_each_keep_their_name():
    to = [("Ministro, Sr.", "a@mju.es"), ("Журавлёв", "b@mju.es"), ("", "c@mju.es")]
    msg = parse(build(to=to, cc=[]))
    assert addresses(msg, "To") == ["a@mju.es", "b@mju.es", "c@mju.es"]
    assert "Cc" not in msg
    assert [a.display_name for a in msg["To"].addresses] == ["Ministro, Sr.", "Журавлёв", ""]


def test_a_name_that_looks_like_an_encoded_word_stays_literal():
    name = "=?utf-8?q?Minister_of_Justice?="
    data = build(reply_to=(name, "someone@example.org"))
    assert rfc_display_name(raw_headers(data)["Reply-To"]) == name
    assert parse(data)["Reply-To"].addresses[0].display_name == name


# --- encoded words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "García",
        "Ж" * 200,
        "毛" * 100,
        "🎉" * 50,
        "a" * 30 + "é" * 30 + " " + "z" * 100,
        "e\u0301" * 40,
        "👩‍👩‍👧 " * 20,
        " spaces  around ",
    ],
    ids=["short", "cyrillic", "cjk", "emoji", "mixed", "combining", "zwj", "spaces"],
)
def test_encode_words_makes_valid_words_that_join_back(text):
    encoded = mime.encode_words(text)
    words = encoded.split("\r\n ")
    for word in words:
        assert len(word) <= 75
        m = re.fullmatch(r"=\?utf-8\?b\?([A-Za-z0-9+/=]+)\?=", word)
        assert m, word
        # RFC 2047: each word holds whole characters, so each decodes on its own.
        base64.b64decode(m.group(1), validate=True).decode("utf-8")
    assert "".join(c.decode(cs) for c, cs in decode_header(encoded)) == text


# --- Subject -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Les pido que detengan la extradición de Aleksandr Pavlov",
        "Не экстрадируйте Александра Павлова в Казахстан — это опасно для жизни",
        "東京からのお願い：送還しないでください",
        "Emoji 🎉 and  double  spaces",
        "Line\r\nBcc: injected@evil.example",
    ],
)
def test_non_ascii_subject_round_trips(subject):
    data = build(subject=subject)
    raw = unfold(raw_headers(data)["Subject"])
    assert "".join(c.decode(cs or "ascii") for c, cs in decode_header(raw)) == subject
    msg = parse(data)
    assert "Bcc" not in msg
    assert addresses(msg, "To") == ["ministro@mju.es"]


def test_ascii_subject_is_sent_as_is():
    data = build(subject="Do not extradite Aleksandr Pavlov")
    assert b"\r\nSubject: Do not extradite Aleksandr Pavlov\r\n" in data
    assert parse(data)["Subject"] == "Do not extradite Aleksandr Pavlov"


# --- structure and bodies ----------------------------------------------------------------

TEXT = (
    "Sr. Ministro:\n\n"
    "Le escribo para pedirle que no extradite a Aleksandr Pavlov.   \n"
    "\tTabulated line = with equals =3D and =?utf-8?q?x?= in it\n"
    ".\n"
    ". A line starting with a dot\n"
    "From here on, a line starting with From\n"
    "--=_not-the-boundary\n" + "Ünïcödé " * 40 + "\n" + "x" * 500 + "\n\nAtentamente,\nAna García"
)
HTML = (
    "<p>Sr. Ministro:</p>\n<p>Le escribo &amp; le pido <b>garantías</b>.</p>\n"
    + "<p>"
    + "ñ" * 300
    + "</p>\n<p>🎉</p>"
)


def test_multipart_alternative_text_and_html_decode_back_exactly():
    data = build(text=TEXT, html=HTML)
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["MIME-Version"] == "1.0"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT
    assert parts[1].get_content().replace("\r\n", "\n") == HTML
    assert not msg.defects
    assert all(not p.defects for p in parts)


def test_text_only_message():
    data = build(text=TEXT, html=None)
    msg = parse(data)
    assert msg.get_content_type() == "text/plain"
    assert not msg.is_multipart()
    assert msg.get_content().replace("\r\n", "\n") == TEXT


def test_standard_headers():
    msg = parse(build(message_id="<abc123@amnesty.test>", date=1_700_000_000.0))
    assert msg["Message-ID"] == "<abc123@amnesty.test>"
    assert msg["Date"].datetime.timestamp() == 1_700_000_000.0
    assert msg["Date"].datetime.utcoffset() is not None
    assert addresses(msg, "From") == ["appeals@amnesty.test"]
    for name in ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID"):
        assert len(msg.get_all(name)) == 1, name
    assert "Reply-To" not in parse(build(reply_to=None))


def test_message_ids_are_unique_and_on_the_domain():
    ids = {mime.make_message_id("amnesty.test") for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"<[0-9a-f]{32}@amnesty\.test>", i) for i in ids)
