"""the managers' console: its counts and breakdowns from one index, deliveries per hour

The overview counts appeals per campaign, state, letter language and supporter country
in one GROUP BY; with this index it reads the index alone (100,000 appeals: 30 ms
instead of 290 on SQLite). Deliveries per hour count ranges of a partial index that an
appeal enters once, when it is sent (its status, the same in every entry, lets SQLite
answer from the index alone).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SENT = "status = 'sent'"


def upgrade():
    op.create_index(
        "ix_appeals_breakdown", "appeals", ["campaign", "status", "language", "country"]
    )
    op.create_index(
        "ix_appeals_sent",
        "appeals",
        ["sent_at", "campaign", "status"],
        postgresql_where=sa.text(SENT),
        sqlite_where=sa.text(SENT),
    )


def downgrade():
    op.drop_index("ix_appeals_sent", table_name="appeals")
    op.drop_index("ix_appeals_breakdown", table_name="appeals")
