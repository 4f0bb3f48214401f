"""HTML forms (Flask-WTF gives them CSRF protection). Validation of supporter
input is done once, in :mod:`campaign.intake`, for the form and the API alike.

The supporter's forms speak the interface language (lazy strings, translated when a
page renders them); the staff's forms are in English."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from .intake import MESSAGE_MAX, NAME_MAX
from .settings import SECURITY_CHOICES

SEND_MY_APPEAL = _l("Send my appeal")
"""The button that sends an appeal, on the form and on the confirm page. The confirmation
mail names it, so it reads the same there in every language (one msgid)."""

YOUR_NAME = _l("Your name")
YOUR_EMAIL = _l("Your e-mail")
LETTER_LANGUAGE = _l("Language of the letter")
YOUR_COUNTRY = _l("Your country")
OWN_SENTENCE = _l("A sentence of your own (optional)")


class AppealForm(FlaskForm):
    name = StringField(YOUR_NAME, render_kw={"autocomplete": "name", "maxlength": NAME_MAX})
    email = EmailField(YOUR_EMAIL, render_kw={"autocomplete": "email", "maxlength": 254})
    # Choices are checked by campaign.intake with a clearer message (and a 422).
    language = SelectField(LETTER_LANGUAGE, choices=[], validate_choice=False)
    country = SelectField(YOUR_COUNTRY, choices=[], validate_choice=False)
    message = TextAreaField(OWN_SENTENCE, render_kw={"maxlength": MESSAGE_MAX, "rows": 3})
    consent = BooleanField(_l("Send this appeal in my name"))
    preview = SubmitField(_l("Preview my appeal"))
    send = SubmitField(SEND_MY_APPEAL)


class ConfirmForm(FlaskForm):
    """The owner's last look at the letter: they may change it before sending."""

    name = StringField(YOUR_NAME, render_kw={"autocomplete": "name", "maxlength": NAME_MAX})
    language = SelectField(LETTER_LANGUAGE, choices=[], validate_choice=False)
    country = SelectField(YOUR_COUNTRY, choices=[], validate_choice=False)
    message = TextAreaField(OWN_SENTENCE, render_kw={"maxlength": MESSAGE_MAX, "rows": 3})
    preview = SubmitField(_l("Preview my changes"))
    submit = SubmitField(SEND_MY_APPEAL)


class SelfSentForm(FlaskForm):
    """ "I sent it myself": how (a link, or the copied letter), and from the confirmation
    page the link's token, so that the report belongs to that appeal. The channel is
    checked by the view, with a clearer message (and a 422)."""

    channel = RadioField(
        _l("How did you send it?"),
        choices=[
            SelectChoice("mailto", _l("My mail program")),
            SelectChoice("gmail", _l("Gmail")),
            SelectChoice("outlook", _l("Outlook")),
            SelectChoice("copy", _l("I copied the letter into a message")),
        ],
        validate_choice=False,
    )
    token = HiddenField()
    report = SubmitField(_l("I sent it myself"))


class ResendForm(FlaskForm):
    email = EmailField(YOUR_EMAIL, render_kw={"autocomplete": "email", "maxlength": 254})
    send = SubmitField(_l("Send me the link again"))


# Staff forms (/login, /manage, /admin) stay in English.


class LoginForm(FlaskForm):
    email = StringField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    submit = SubmitField("Log in")


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new = PasswordField(
        "New password (at least 12 characters)", validators=[DataRequired(), Length(max=200)]
    )
    repeat = PasswordField("New password again", validators=[DataRequired(), Length(max=200)])
    save = SubmitField("Change password")


class UserActionForm(FlaskForm):
    """CSRF only: the action (disable, enable, reset) comes as the button's value."""


class RelayForm(FlaskForm):
    relay_host = StringField("SMTP host", validators=[Optional(), Length(max=253)])
    relay_port = IntegerField("Port", validators=[Optional(), NumberRange(1, 65535)])
    relay_security = SelectField("Security", choices={c: c for c in SECURITY_CHOICES})
    relay_username = StringField("User name", validators=[Optional(), Length(max=254)])
    relay_password = PasswordField(
        "Password (leave empty to keep the stored one)", validators=[Optional(), Length(max=512)]
    )
    relay_sender = StringField("Sender address", validators=[Optional(), Length(max=254)])
    org_name = StringField("Organisation name", validators=[Optional(), Length(max=100)])
    save = SubmitField("Save relay settings")
    revert = SubmitField("Forget saved settings (use the environment's)")


class PacingForm(FlaskForm):
    pacing_per_domain_per_hour = DecimalField(
        "Appeals per hour to one receiving domain (everyone at mju.es shares one)",
        validators=[DataRequired(), NumberRange(0.1, 1_000_000)],
        places=None,
    )
    pacing_per_address_per_hour = DecimalField(
        "Appeals per hour to one address",
        validators=[DataRequired(), NumberRange(0.1, 1_000_000)],
        places=None,
    )
    pacing_business_hours_only = BooleanField(
        "Only Monday to Friday, 09:00–17:00 in the target's time zone"
    )
    save_pacing = SubmitField("Save pacing")


class TestMailForm(FlaskForm):
    send = SubmitField("Send a test message to me")


class DiplomatForm(FlaskForm):
    country = SelectField("Accredited to (supporter country)", choices=[])
    name = StringField("Name / office", validators=[DataRequired(), Length(max=200)])
    email = StringField("E-mail", validators=[Optional(), Length(max=254)])
    fax = StringField("Fax", validators=[Optional(), Length(max=64)])
    postal_address = TextAreaField("Postal address", validators=[Optional(), Length(max=1000)])
    add = SubmitField("Add representative")


class EraseForm(FlaskForm):
    email = StringField("Supporter's e-mail address", validators=[DataRequired(), Length(max=254)])
    erase = SubmitField("Erase their personal data")


class SteerForm(FlaskForm):
    """CSRF only: the action and the appeal come as button values."""


class DeleteForm(FlaskForm):
    delete = SubmitField("Delete")


class CampaignOptionsForm(FlaskForm):
    confirmation_required = BooleanField("Supporters must confirm by e-mail before sending")
    paused = BooleanField("Paused: take no new appeals")
    save = SubmitField("Save")


class UserForm(FlaskForm):
    email = StringField("E-mail", validators=[DataRequired(), Length(max=254)])
    role = SelectField("Role", choices={"manager": "manager", "admin": "admin"})
    add = SubmitField("Add user")
