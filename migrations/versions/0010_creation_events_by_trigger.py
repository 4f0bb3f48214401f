"""an appeal's first event is written by the database too

Migration 0005 made the database write the event of every move; the event of an
appeal's creation (from nothing to its first state) was still a second INSERT by the
application. A row trigger on INSERT now writes it, with the row's ``status_reason``
and ``created_at``: a new appeal costs one statement, which on PostgreSQL can run as
a transaction of its own (one round trip instead of four: BEGIN, INSERT, INSERT, COMMIT).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 04:00:00

"""

from alembic import op


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


POSTGRESQL_FUNCTION = """
CREATE FUNCTION appeals_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO appeal_events (appeal_id, from_status, to_status, reason, at)
    VALUES (NEW.id, NULL, NEW.status, NEW.status_reason, NEW.created_at);
    RETURN NULL;
END
$$
"""

POSTGRESQL_TRIGGER = """
CREATE TRIGGER appeals_created AFTER INSERT ON appeals
FOR EACH ROW EXECUTE FUNCTION appeals_created()
"""

SQLITE_TRIGGER = """
CREATE TRIGGER appeals_created AFTER INSERT ON appeals
FOR EACH ROW
BEGIN
    INSERT INTO appeal_events (appeal_id, from_status, to_status, reason, at)
    VALUES (NEW.id, NULL, NEW.status, NEW.status_reason, NEW.created_at);
END
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_FUNCTION)
        op.execute(POSTGRESQL_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS appeals_created ON appeals")
        op.execute("DROP FUNCTION IF EXISTS appeals_created()")
    else:
        op.execute("DROP TRIGGER IF EXISTS appeals_created")
