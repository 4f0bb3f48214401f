"""recipients and states: a delivery record per recipient, states held by a CHECK

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 19:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATES = (
    "awaiting_confirmation",
    "queued",
    "sending",
    "sent",
    "retrying",
    "failed",
    "held",
    "cancelled",
)


def _one_of(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Each holds only the rows a query looks for, so an appeal moving on leaves them.
PARTIAL_INDEXES = (
    ("ix_appeals_due", "id", _one_of("status", ("queued", "retrying"))),
    ("ix_appeals_sending", "updated_at", "status = 'sending'"),
    (
        "ix_appeals_unmailed",
        "id",
        "status = 'awaiting_confirmation' AND confirmation_sent_at IS NULL",
    ),
    ("ix_appeals_attention", "updated_at", _one_of("status", ("failed", "retrying", "held"))),
)


def upgrade():
    op.create_table(
        "appeal_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appeal_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            _one_of("status", ("pending", "accepted", "failed")),
            name=op.f("ck_appeal_recipients_status"),
        ),
        sa.CheckConstraint(_one_of("role", ("to", "cc")), name=op.f("ck_appeal_recipients_role")),
        sa.ForeignKeyConstraint(
            ["appeal_id"],
            ["appeals.id"],
            name=op.f("fk_appeal_recipients_appeal_id_appeals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appeal_recipients")),
        sa.UniqueConstraint("appeal_id", "address", name="uq_appeal_recipients_appeal_address"),
    )
    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appeal_recipients_appeal_id"), ["appeal_id"], unique=False
        )

    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_issued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_column("message_id")
        batch_op.drop_column("delivery_report")
        batch_op.create_check_constraint(op.f("ck_appeals_status"), _one_of("status", STATES))
        batch_op.drop_index("ix_appeals_status_next_attempt")
        batch_op.drop_index("ix_appeals_status")
        batch_op.drop_index("ix_appeals_job_id")
    for name, column, where in PARTIAL_INDEXES:
        op.create_index(
            name,
            "appeals",
            [column],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    op.execute("UPDATE appeals SET token_issued_at = created_at WHERE token_issued_at IS NULL")


def downgrade():
    for name, _, _ in PARTIAL_INDEXES:
        op.drop_index(name, table_name="appeals")
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.create_index("ix_appeals_job_id", ["job_id"], unique=False)
        batch_op.create_index("ix_appeals_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_appeals_status_next_attempt", ["status", "next_attempt_at"], unique=False
        )
        batch_op.drop_constraint("ck_appeals_status", type_="check")
        batch_op.add_column(sa.Column("delivery_report", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("message_id", sa.String(length=255), nullable=True))
        batch_op.drop_column("token_issued_at")
    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appeal_recipients_appeal_id"))
    op.drop_table("appeal_recipients")
