"""Tables. The database is the source of truth for every appeal; Redis only carries ids."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import UTCDateTime, db, utcnow


class Status:
    """Names of the states an appeal moves through."""

    AWAITING_CONFIRMATION = "awaiting_confirmation"
    """Stored; nothing is sent in the supporter's name until they confirm."""
    QUEUED = "queued"
    """Confirmed and due for delivery."""
    SENDING = "sending"
    """Claimed by a worker that is talking to the relay."""
    SENT = "sent"
    """Every addressee's copy is settled: the main addressee's accepted by the relay, each
    copy accepted or refused for good (a refusal shows in ``status_reason``)."""
    RETRYING = "retrying"
    """A transient error; delivery is tried again after ``next_attempt_at``."""
    FAILED = "failed"
    """The main addressee's copy failed for good, with the relay's reply in ``status_reason``."""
    HELD = "held"
    """Stopped by a manager or by a rule; nothing is sent until released."""
    CANCELLED = "cancelled"
    """Withdrawn; never sent."""

    ALL = (AWAITING_CONFIRMATION, QUEUED, SENDING, SENT, RETRYING, FAILED, HELD, CANCELLED)


class Delivery:
    """Names of the states of one recipient's copy of an appeal."""

    PENDING = "pending"
    """Not yet accepted; goes in the envelope of the appeal's next attempt."""
    ACCEPTED = "accepted"
    """The relay answered 250 for this recipient and for the message."""
    FAILED = "failed"
    """Refused for good (a 5xx, or transient errors ``MAX_ATTEMPTS`` times), or dropped
    because the appeal ended before this copy could go."""
    BOUNCED = "bounced"
    """Accepted by the relay, then returned by a mail server further on: a delivery
    status notification (RFC 3464) came back to the bounce address; the reason is in
    ``last_reply``."""

    ALL = (PENDING, ACCEPTED, FAILED, BOUNCED)


class Mode:
    """How a campaign's appeals reach its targets (``campaign_options.delivery_mode``)."""

    EACH = "each"
    """One e-mail per supporter (the default)."""
    DIGEST = "digest"
    """One message per target every ``digest_hours``: the letter once, every supporter's
    name, country and sentence, and a CSV attachment."""
    CAPPED = "capped"
    """One e-mail per supporter up to ``daily_cap`` a day; the rest go in the digest."""

    ALL = (EACH, DIGEST, CAPPED)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


#: The rows the dispatcher and the recovery look for, as SQL. Queries use these very
#: strings, so that the database can see that a partial index below covers them.
DUE = _one_of("status", (Status.QUEUED, Status.RETRYING))
IN_FLIGHT = "status = 'sending'"
UNMAILED = "status = 'awaiting_confirmation' AND confirmation_sent_at IS NULL"
NOTICE_DUE = "notice_requested_at IS NOT NULL"
TOKEN_SET = "confirm_token_hash IS NOT NULL"  # noqa: S105 - SQL, not a secret
SENT = "status = 'sent'"


def _partial(name: str, column: str, where: str, unique: bool = False) -> Index:
    return Index(
        name, column, unique=unique, postgresql_where=text(where), sqlite_where=text(where)
    )


class Role:
    """What a staff account may do."""

    MANAGER = "manager"
    """Watches and steers the send queue."""
    ADMIN = "admin"
    """Also configures the relay and the users."""

    ALL = (MANAGER, ADMIN)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.MANAGER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of every session cookie; raising it ends every session of this user
    # (logging out, a new password, being disabled).
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A password someone else chose (the first admin's, printed once; an admin's reset)
    # must be replaced at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class AuditEvent(db.Model):
    """Who did what and when: sign-ins, settings, steering, exports, erasures."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The staff member's address, the address a failed sign-in tried, or "cli".
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    client: Mapped[str | None] = mapped_column(String(64))


class Setting(db.Model):
    """An admin-edited setting; overrides the environment's value of the same name."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(254))


class CampaignOption(db.Model):
    """Per-campaign switches an admin can flip without touching the campaign's files."""

    __tablename__ = "campaign_options"

    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    confirmation_required: Mapped[bool] = mapped_column(Boolean, default=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Closed by hand, or (close_at_deadline) from the campaign's deadline on.
    closed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    close_at_deadline: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )
    # The section office to ask after the deadline: {"*": text, "<country>": text}.
    section_contacts: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Sending, not intake: while set, this campaign's confirmed appeals wait (campaign.sending).
    sending_paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # Test mode: set, every appeal goes to this staff address instead of its addressees.
    test_address: Mapped[str | None] = mapped_column(String(254))
    # Per-supporter mail, a digest, or mail up to a daily cap and a digest for the rest.
    delivery_mode: Mapped[str] = mapped_column(
        String(8), default=Mode.EACH, server_default=Mode.EACH
    )
    digest_hours: Mapped[int] = mapped_column(Integer, default=24, server_default="24")
    daily_cap: Mapped[int | None] = mapped_column(Integer)


class Diplomat(db.Model):
    """A diplomatic representative of ``target_state`` accredited to ``country``."""

    __tablename__ = "diplomats"
    __table_args__ = (UniqueConstraint("target_state", "country", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_state: Mapped[str] = mapped_column(String(2))
    country: Mapped[str] = mapped_column(String(2), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    fax: Mapped[str | None] = mapped_column(String(64))
    postal_address: Mapped[str | None] = mapped_column(Text)


class Appeal(db.Model):
    __tablename__ = "appeals"
    __table_args__ = (
        UniqueConstraint("campaign", "email", name="uq_appeals_campaign_email"),
        CheckConstraint(_one_of("status", Status.ALL), name="status"),
        # Partial indexes: each holds only the rows a query looks for (the backlog, the
        # batches in flight, the unmailed), so that an appeal moving on to ``sent``
        # leaves them instead of adding an entry to each.
        _partial("uq_appeals_confirm_token_hash", "confirm_token_hash", TOKEN_SET, unique=True),
        _partial("ix_appeals_due", "id", DUE),
        _partial("ix_appeals_sending", "updated_at", IN_FLIGHT),
        _partial("ix_appeals_unmailed", "id", UNMAILED),
        _partial("ix_appeals_notice_due", "id", NOTICE_DUE),
        _partial(
            "ix_appeals_attention",
            "updated_at",
            _one_of("status", (Status.FAILED, Status.RETRYING, Status.HELD)),
        ),
        Index("ix_appeals_fingerprint", "campaign", "fingerprint"),
        # The managers' console (campaign.console): every count and breakdown of the
        # overview read from this index alone, and the deliveries per hour.
        Index("ix_appeals_breakdown", "campaign", "status", "language", "country"),
        Index(
            "ix_appeals_sent",
            "sent_at",
            "campaign",
            "status",  # the same in every entry; it lets SQLite read the index alone
            postgresql_where=text(SENT),
            sqlite_where=text(SENT),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    campaign: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254))
    language: Mapped[str] = mapped_column(String(2))
    country: Mapped[str] = mapped_column(String(2))
    message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24))
    status_reason: Mapped[str | None] = mapped_column(Text)
    confirm_token_hash: Mapped[str | None] = mapped_column(String(64))
    # When the confirmation token was issued; the token is derived from it.
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The job that claimed this appeal; only that job records its outcome.
    job_id: Mapped[str | None] = mapped_column(String(64))
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # When the supporter's personal data was removed (retention, or on request).
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Someone submitted this address again after the appeal was confirmed: its owner
    # is told by e-mail (the only place that says whether an address has appealed).
    notice_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The supporter's interface language (pages and mail to them), not the letter's.
    locale: Mapped[str | None] = mapped_column(String(8))
    # The letter's text without the supporter's name: how many others sent the same.
    fingerprint: Mapped[str | None] = mapped_column(String(32))
    # When the supporter was sent a receipt (the main addressee accepted the appeal).
    receipt_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    events: Mapped[list[AppealEvent]] = relationship(
        back_populates="appeal", order_by="AppealEvent.id", cascade="all, delete-orphan"
    )
    recipients: Mapped[list[Recipient]] = relationship(
        back_populates="appeal", order_by="Recipient.id", cascade="all, delete-orphan"
    )

    @property
    def message_id(self) -> str | None:
        """The Message-ID every copy of this appeal carries, once one went out."""
        return next((r.message_id for r in self.recipients if r.message_id), None)


class Recipient(db.Model):
    """One addressee's copy of an appeal: its own state, attempts and the relay's reply.

    Rows are written on the appeal's first attempt, from the letter's To and Cc; a retry
    goes only to the rows still pending, with the same headers and Message-ID.
    """

    __tablename__ = "appeal_recipients"
    __table_args__ = (
        UniqueConstraint("appeal_id", "address", name="uq_appeal_recipients_appeal_address"),
        CheckConstraint(_one_of("status", Delivery.ALL), name="status"),
        CheckConstraint(_one_of("role", ("to", "cc")), name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Looked up through the unique (appeal_id, address) index: no index of its own.
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(12), default=Delivery.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The relay's last reply for this recipient, e.g. "250 2.0.0 Ok" or "451 4.3.0 …".
    last_reply: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    # When a bounce for this copy came back (its status is then ``bounced``).
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The digest this copy went in, where the campaign sends digests.
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("digests.id", ondelete="SET NULL"), index=True
    )

    appeal: Mapped[Appeal] = relationship(back_populates="recipients")


class AppealEvent(db.Model):
    """One move of an appeal from one state to another, with its time and reason."""

    __tablename__ = "appeal_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)

    appeal: Mapped[Appeal] = relationship(back_populates="events")


class Digest(db.Model):
    """One message to one target carrying every supporter of a period (digest mode)."""

    __tablename__ = "digests"
    __table_args__ = (
        Index("ix_digests_campaign_address", "campaign", "address"),
        CheckConstraint(_one_of("status", ("pending", "sent", "failed")), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200), default="")
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    supporters: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    last_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))


class Bounce(db.Model):
    """A bounce read from the bounce mailbox: hard (permanent) or soft (for now)."""

    __tablename__ = "bounces"
    __table_args__ = (Index("ix_bounces_address", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The target's address that the report says failed.
    address: Mapped[str] = mapped_column(String(254))
    kind: Mapped[str] = mapped_column(String(8))  # "hard" or "soft"
    reason: Mapped[str | None] = mapped_column(Text)
    appeal_id: Mapped[int | None] = mapped_column(
        ForeignKey("appeals.id", ondelete="SET NULL"), index=True
    )
    recipient_id: Mapped[int | None] = mapped_column(
        ForeignKey("appeal_recipients.id", ondelete="SET NULL")
    )
    # The report's own Message-ID: a report read twice counts once.
    report_id: Mapped[str | None] = mapped_column(String(255), unique=True)


class TargetFlag(db.Model):
    """A target address that hard-bounced: its queued mail is held until a manager decides."""

    __tablename__ = "target_flags"

    address: Mapped[str] = mapped_column(String(254), primary_key=True)
    flagged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    # None while undecided; then "released" or "rerouted".
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(254))


class AddressChange(db.Model):
    """An addressee's e-mail changed at run time: letters go to ``new_address`` from then on."""

    __tablename__ = "address_changes"
    __table_args__ = (Index("ix_address_changes_old", "old_address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None: every campaign that writes to the old address.
    campaign: Mapped[str | None] = mapped_column(String(64))
    old_address: Mapped[str] = mapped_column(String(254))
    new_address: Mapped[str] = mapped_column(String(254))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(String(254))
    # How many copies were re-routed with the change.
    rerouted: Mapped[int] = mapped_column(Integer, default=0)


class SelfReport(db.Model):
    """A supporter's word that they sent the letter from their own mailbox: counted as
    "self-sent (reported)", never as delivered mail."""

    __tablename__ = "self_reports"
    __table_args__ = (Index("ix_self_reports_campaign", "campaign"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(64))
    appeal_id: Mapped[int | None] = mapped_column(ForeignKey("appeals.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(12))  # mailto, gmail, outlook, copy
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
