"""the supporter's interface language, a letter's fingerprint, receipts, closed campaigns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 22:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    # ADD COLUMN only: SQLite keeps the table (and 0005's triggers) as it is.
    with op.batch_alter_table("appeals", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("receipt_sent_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index("ix_appeals_fingerprint", "appeals", ["campaign", "fingerprint"])
    with op.batch_alter_table("campaign_options", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("closed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "close_at_deadline", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("section_contacts", sa.JSON(), nullable=True))


def downgrade():
    op.drop_index("ix_appeals_fingerprint", table_name="appeals")
    with op.batch_alter_table("campaign_options", schema=None) as batch_op:
        batch_op.drop_column("section_contacts")
        batch_op.drop_column("close_at_deadline")
        batch_op.drop_column("closed")
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.drop_column("receipt_sent_at")
        batch_op.drop_column("fingerprint")
        batch_op.drop_column("locale")
