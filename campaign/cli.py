"""``flask --app app users …``, ``capture …`` and ``broker …`` commands."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from .db import db
from .exceptions import InvalidInput
from .models import Role, User

users_cli = AppGroup("users", help="Staff accounts (managers and admins).")
capture_cli = AppGroup("capture", help="The local mail capture.")
appeals_cli = AppGroup("appeals", help="The send queue: dispatcher and synthetic load.")
dkim_cli = AppGroup("dkim", help="The DKIM key that signs every mail (campaign/dkim.py).")


@dkim_cli.command("init")
@click.option("--selector", required=True, help="The DNS selector, e.g. appeals2026.")
@click.option("--domain", required=True, help="The signing domain: the sender address's.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa")
@click.option("--force", is_flag=True, help="Replace an existing key.")
def dkim_init_command(selector: str, domain: str, algorithm: str, force: bool) -> None:
    """Create a signing key in the instance folder (mode 0600), then print its record."""
    from .dkim import DkimError, create_key, key_path

    try:
        signer = create_key(
            current_app.instance_path, selector, domain, kind=algorithm, force=force
        )
    except DkimError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"key written to {key_path({}, current_app.instance_path)}; publish:", err=True)
    click.echo(signer.dns_line())


@dkim_cli.command("dns")
def dkim_dns_command() -> None:
    """Print the DNS record to publish, as one line."""
    from .dkim import DkimError, current_signer

    try:
        signer = current_signer()
    except DkimError as e:
        raise click.ClickException(str(e)) from e
    if signer is None:
        raise click.ClickException("no DKIM key: run flask --app app dkim init first")
    click.echo(signer.dns_line())


@click.command("doctor")
@with_appcontext
@click.option(
    "--nameserver",
    default=None,
    help="Ask this DNS server (default: DOCTOR_NAMESERVER, else the system's).",
)
def doctor_command(nameserver: str | None) -> None:
    """Check, before a campaign starts, that its mail will be delivered."""
    from .doctor import run_checks

    results = run_checks(nameserver=nameserver)
    for check in results:
        click.echo(check.line())
    failed = [c for c in results if c.failed]
    if failed:
        click.echo(f"{len(failed)} check(s) failed.")
        raise SystemExit(1)
    click.echo("All checks passed.")


@appeals_cli.command("dispatch")
@click.option("--once", is_flag=True, help="One pass (recovery included), then exit.")
@click.option(
    "--interval",
    type=float,
    default=None,
    help="Seconds between looks for lost work (default: SWEEP_INTERVAL, 1).",
)
def dispatch_command(once: bool, interval: float | None) -> None:
    """Hand due appeals to workers in batches, and recover lost ones (run one of these)."""
    from .delivery.dispatcher import run_forever, sweep

    if once:
        click.echo(str(sweep()))
        return
    config = current_app.config
    run_forever(interval or float(config["SWEEP_INTERVAL"]), float(config["DISPATCH_WINDOW"]))


# The first landing's name for the dispatcher; kept so that existing set-ups still work.
appeals_cli.add_command(dispatch_command, "sweep")


@appeals_cli.command("digest")
@click.option("--campaign", "slug", default=None, help="Only this campaign (default: every one).")
@click.option("--now", "at_once", is_flag=True, help="Send now, even if no digest is due.")
def digest_command(slug: str | None, at_once: bool) -> None:
    """Send the digests that are due (the dispatcher does this every minute), or with
    --now a digest of every appeal waiting for one, at once."""
    from . import digests
    from .snapshots import delivery_modes

    modes = delivery_modes()
    if slug is not None and slug not in modes:
        raise click.ClickException(
            f"{slug} sends one e-mail per supporter (or does not exist): choose digest or "
            "capped mode on its admin page first"
        )
    slugs = [slug] if slug else sorted(modes)
    if not at_once:
        due = set(digests.due_digests())
        slugs = [s for s in slugs if s in due]
    if not slugs:
        click.echo("no digest is due")
    for name in slugs:
        click.echo(str(digests.send_digest(name, scheduled=not at_once)))


@appeals_cli.command("bounces")
@click.option("--limit", type=click.IntRange(1), default=None, help="Read at most this many.")
@click.option(
    "--every",
    type=click.FloatRange(1),
    default=None,
    help="Keep reading, every this many seconds (default: one pass, then exit).",
)
def bounces_command(limit: int | None, every: float | None) -> None:
    """Read the bounce mailbox (BOUNCE_IMAP_URL): hard bounces flag their address and
    hold its mail, soft ones and auto-replies are counted."""
    import imaplib
    import time

    from .bounces import read_mailbox

    url = current_app.config.get("BOUNCE_IMAP_URL")
    if not url:
        raise click.ClickException("set BOUNCE_IMAP_URL (imap://user:password@host/INBOX)")
    while True:
        try:
            totals = read_mailbox(url, limit)
        except (ValueError, OSError, imaplib.IMAP4.error) as e:
            if every is None:
                raise click.ClickException(f"bounce mailbox: {e}") from e
            current_app.logger.warning("bounce mailbox: %s; trying again", e)
        else:
            click.echo(", ".join(f"{k} {v}" for k, v in totals.items()))
        if every is None:
            return
        time.sleep(every)


@appeals_cli.command("synthetic")
@click.option("--campaign", "slug", required=True)
@click.option("--count", type=click.IntRange(1, 1_000_000), required=True)
def synthetic_command(slug: str, count: int) -> None:
    """Create COUNT confirmed appeals from synthetic supporters (loopback relays only)."""
    from .synthetic import create_synthetic

    try:
        created = create_synthetic(slug, count)
    except Exception as e:  # noqa: BLE001 - shown to the operator as a clean error
        raise click.ClickException(str(e)) from e
    click.echo(f"created {created} queued appeals in {slug}")


@appeals_cli.command("erase")
@click.argument("email")
def erase_command(email: str) -> None:
    """Remove a supporter's personal data from every appeal of theirs, on request."""
    from .retention import erase_supporter

    count = erase_supporter(email, by="cli")
    click.echo(f"erased the personal data of {count} appeal(s)")


@appeals_cli.command("retention")
def retention_command() -> None:
    """Remove personal data that is due to go (the dispatcher does this every hour)."""
    from .retention import apply_retention

    click.echo(str(apply_retention()))


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(Role.ALL), default=Role.MANAGER, show_default=True)
@click.option(
    "--password",
    envvar="NEW_USER_PASSWORD",
    default=None,
    help="Default: generated and printed once. Prefer the NEW_USER_PASSWORD "
    "variable to keep it out of shell history.",
)
def create_user_command(email: str, role: str, password: str | None) -> None:
    """Add a staff account."""
    from .users import create_user

    try:
        user, password = create_user(email, role, password)
    except InvalidInput as e:
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in e.fields.items())) from e
    click.echo(f"created {user.role} {user.email}")
    click.echo(f"password: {password}")


@users_cli.command("set-password")
@click.argument("email")
@click.option(
    "--password",
    envvar="NEW_USER_PASSWORD",
    default=None,
    help="Default: generated and printed once. Prefer the NEW_USER_PASSWORD variable.",
)
@click.option("--must-change", is_flag=True, help="Make them choose their own at next sign-in.")
def set_password_command(email: str, password: str | None, must_change: bool) -> None:
    """Set a staff member's password; every session of theirs ends."""
    from . import audit
    from .users import find, new_password, set_password

    user = find(email)
    if user is None:
        raise click.ClickException(f"no user {email}")
    chosen = password or new_password()
    try:
        set_password(user, chosen, must_change=must_change)
    except InvalidInput as e:
        raise click.ClickException(e.fields["password"]) from e
    audit.record("password set", user.email, actor="cli")
    db.session.commit()
    click.echo(f"password set for {user.email}; their sessions have ended")
    if not password:
        click.echo(f"password: {chosen}")


@users_cli.command("list")
def list_users_command() -> None:
    """Show staff accounts."""
    for user in db.session.scalars(db.select(User).order_by(User.email)):
        click.echo(f"{user.email}\t{user.role}\t{'active' if user.active else 'disabled'}")


@users_cli.command("ensure-admin")
@click.option("--email", envvar="ADMIN_EMAIL", default="admin@example.org", show_default=True)
def ensure_admin_command(email: str) -> None:
    """Create a first admin with a random password if there are no users yet."""
    from .users import create_user

    if db.session.scalar(db.select(db.func.count()).select_from(User)):
        return
    try:
        # Printed once on a terminal: it must be replaced at the first sign-in.
        user, password = create_user(email, Role.ADMIN, must_change=True)
    except InvalidInput as e:
        raise click.ClickException("; ".join(f"{k}: {v}" for k, v in e.fields.items())) from e
    click.echo(
        f"First run: log in as {user.email} with password {password} "
        "(you will choose your own at once)"
    )


@capture_cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: MAIL_CAPTURE_PORT (1025).")
def capture_serve_command(host: str, port: int | None) -> None:
    """Run the local SMTP capture in the foreground."""
    from .capture import serve

    serve(
        current_app.config["MAIL_CAPTURE_DIR"],
        host,
        port or current_app.config["MAIL_CAPTURE_PORT"],
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(capture_cli)
    app.cli.add_command(appeals_cli)
    app.cli.add_command(dkim_cli)
    app.cli.add_command(doctor_command)
