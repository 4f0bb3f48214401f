"""Tables. The database is the source of truth for every appeal; Redis only carries ids."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
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
    """Accepted by the relay for at least the main addressee."""
    RETRYING = "retrying"
    """A transient error; delivery is tried again after ``next_attempt_at``."""
    FAILED = "failed"
    """A permanent error, with the relay's reply in ``status_reason``."""
    HELD = "held"
    """Stopped by a manager or by a rule; nothing is sent until released."""
    CANCELLED = "cancelled"
    """Withdrawn; never sent."""

    ALL = (AWAITING_CONFIRMATION, QUEUED, SENDING, SENT, RETRYING, FAILED, HELD, CANCELLED)


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

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


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
        Index("ix_appeals_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    campaign: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254))
    language: Mapped[str] = mapped_column(String(2))
    country: Mapped[str] = mapped_column(String(2))
    message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    confirm_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(255))
    # The RQ job that carries this appeal now; the sweeper re-enqueues when it is gone.
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Per-recipient outcome of the last attempt: {address: [code, reply]}.
    delivery_report: Mapped[dict[str, list[object]] | None] = mapped_column(JSON)
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[AppealEvent]] = relationship(
        back_populates="appeal", order_by="AppealEvent.id", cascade="all, delete-orphan"
    )


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
