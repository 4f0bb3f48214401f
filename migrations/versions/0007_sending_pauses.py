"""pauses of sending per campaign, and test mode (the global pause is a settings row)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    # ADD COLUMN only: SQLite keeps the table as it is.
    with op.batch_alter_table("campaign_options", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("sending_paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("test_address", sa.String(length=254), nullable=True))


def downgrade():
    with op.batch_alter_table("campaign_options", schema=None) as batch_op:
        batch_op.drop_column("test_address")
        batch_op.drop_column("sending_paused")
