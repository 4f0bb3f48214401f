"""the targets' side: bounces, changed addresses, digests, self-sent reports

A recipient's copy can now be ``bounced`` (a delivery status notification came back
after the relay accepted it) and can belong to a digest. Bounces, flagged target
addresses, address changes and supporters' reports of letters they sent themselves
get tables of their own; a campaign chooses its delivery mode.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 01:00:00

"""

from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _one_of(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade():
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("supporters", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            _one_of("status", ("pending", "sent", "failed")), name=op.f("ck_digests_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digests")),
    )
    op.create_index("ix_digests_campaign_address", "digests", ["campaign", "address"])

    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("digest_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_appeal_recipients_digest_id_digests"),
            "digests",
            ["digest_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(batch_op.f("ix_appeal_recipients_digest_id"), ["digest_id"])
        batch_op.drop_constraint(op.f("ck_appeal_recipients_status"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_appeal_recipients_status"),
            _one_of("status", ("pending", "accepted", "failed", "bounced")),
        )

    with op.batch_alter_table("campaign_options", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery_mode", sa.String(length=8), server_default="each", nullable=False)
        )
        batch_op.add_column(
            sa.Column("digest_hours", sa.Integer(), server_default="24", nullable=False)
        )
        batch_op.add_column(sa.Column("daily_cap", sa.Integer(), nullable=True))

    op.create_table(
        "bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("appeal_id", sa.Integer(), nullable=True),
        sa.Column("recipient_id", sa.Integer(), nullable=True),
        sa.Column("report_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["appeal_id"],
            ["appeals.id"],
            name=op.f("fk_bounces_appeal_id_appeals"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["appeal_recipients.id"],
            name=op.f("fk_bounces_recipient_id_appeal_recipients"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounces")),
        sa.UniqueConstraint("report_id", name=op.f("uq_bounces_report_id")),
    )
    op.create_index("ix_bounces_address", "bounces", ["address"])
    op.create_index(op.f("ix_bounces_appeal_id"), "bounces", ["appeal_id"])

    op.create_table(
        "target_flags",
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=254), nullable=True),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_target_flags")),
    )

    op.create_table(
        "address_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=True),
        sa.Column("old_address", sa.String(length=254), nullable=False),
        sa.Column("new_address", sa.String(length=254), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=254), nullable=True),
        sa.Column("rerouted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_changes")),
    )
    op.create_index("ix_address_changes_old", "address_changes", ["old_address"])

    op.create_table(
        "self_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("appeal_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=12), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["appeal_id"],
            ["appeals.id"],
            name=op.f("fk_self_reports_appeal_id_appeals"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_self_reports")),
    )
    op.create_index("ix_self_reports_campaign", "self_reports", ["campaign"])


def downgrade():
    op.drop_index("ix_self_reports_campaign", table_name="self_reports")
    op.drop_table("self_reports")
    op.drop_index("ix_address_changes_old", table_name="address_changes")
    op.drop_table("address_changes")
    op.drop_table("target_flags")
    op.drop_index(op.f("ix_bounces_appeal_id"), table_name="bounces")
    op.drop_index("ix_bounces_address", table_name="bounces")
    op.drop_table("bounces")
    with op.batch_alter_table("campaign_options", schema=None) as batch_op:
        batch_op.drop_column("daily_cap")
        batch_op.drop_column("digest_hours")
        batch_op.drop_column("delivery_mode")
    op.execute("UPDATE appeal_recipients SET status = 'accepted' WHERE status = 'bounced'")
    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_appeal_recipients_status"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_appeal_recipients_status"),
            _one_of("status", ("pending", "accepted", "failed")),
        )
        batch_op.drop_index(batch_op.f("ix_appeal_recipients_digest_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_appeal_recipients_digest_id_digests"), type_="foreignkey"
        )
        batch_op.drop_column("digest_id")
        batch_op.drop_column("bounced_at")
    op.drop_index("ix_digests_campaign_address", table_name="digests")
    op.drop_table("digests")
