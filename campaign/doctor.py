"""Preflight: ``flask --app app doctor`` and the admin's doctor page.

Before a campaign starts, checks that its appeals will be delivered and says so in
plain words: migrations, Redis (and whether it persists), workers and dispatcher,
the relay (EHLO, STARTTLS with a verified certificate, AUTH; no mail is sent), the
sender domain's SPF, DKIM and DMARC records, and PUBLIC_URL. DNS is asked through
dnspython, of ``DOCTOR_NAMESERVER`` (``host`` or ``host:port``) when it is set.

A check is ``ok``, ``warn`` (works, but worth knowing) or ``fail``; any ``fail``
makes the command exit non-zero.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver
from flask import current_app

OK, WARN, FAIL = "ok", "warn", "fail"

HEARTBEAT_STALE_SECONDS = 120.0
"""A dispatcher silent this long is reported as not running."""

SPF_LOOKUPS = 10
"""RFC 7208 4.6.4: DNS-querying terms allowed in one SPF evaluation."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        return f"[{self.status:>4}] {self.name}: {self.detail}"


def resolver(nameserver: str | None) -> dns.resolver.Resolver:
    if not nameserver:
        return dns.resolver.Resolver()
    made = dns.resolver.Resolver(configure=False)
    host, _, port = (
        nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
    )
    made.nameservers = [host or nameserver]
    if port:
        made.port = int(port)
    made.timeout = made.lifetime = 3.0
    return made


def txt(res: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at ``name`` (strings of one record joined); [] if none."""
    try:
        answer = res.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` (DKIM, DMARC) as a dict, keys lower-case, values stripped."""
    out = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().lower()] = "".join(value.split())
    return out


# --- the checks -------------------------------------------------------------------------


def check_migrations() -> Check:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from .db import db

    config = Config()
    config.set_main_option("script_location", current_app.extensions["migrate"].directory)
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with db.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return Check("migrations", OK, f"the database is current ({', '.join(sorted(heads))})")
    return Check(
        "migrations",
        FAIL,
        f"the database is at {', '.join(sorted(current)) or 'nothing'}, the code needs "
        f"{', '.join(sorted(heads))}: run flask --app app db upgrade",
    )


def check_redis() -> list[Check]:
    from .delivery.dispatcher import HEARTBEAT_KEY
    from .delivery.queue import rq

    try:
        redis = rq.connection()
        redis.ping()
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return [Check("redis", FAIL, f"does not answer: {type(e).__name__}")]
    checks = [Check("redis", OK, "answers")]
    try:
        aof = redis.config_get("appendonly").get("appendonly") == "yes"
    except Exception:  # noqa: BLE001 - CONFIG is often disabled on managed Redis
        aof = str(redis.info("persistence").get("aof_enabled")) == "1"
    checks.append(
        Check("redis persistence", OK, "append-only file on")
        if aof
        else Check(
            "redis persistence",
            WARN,
            "no append-only file: a restart loses queued jobs (the dispatcher finds them "
            "again in the database, after a delay)",
        )
    )
    from rq import Worker

    workers = Worker.all(connection=redis)
    checks.append(
        Check("workers", OK, f"{len(workers)} alive")
        if workers
        else Check("workers", FAIL, "none alive: start flask --app app rq worker (make worker)")
    )
    beat = redis.get(HEARTBEAT_KEY)
    age = time.time() - float(beat) if beat else None
    if age is None:
        checks.append(Check("dispatcher", FAIL, "has never run: start make dispatcher"))
    elif age > HEARTBEAT_STALE_SECONDS:
        checks.append(Check("dispatcher", FAIL, f"last ran {age:.0f} s ago: is it running?"))
    else:
        checks.append(Check("dispatcher", OK, f"ran {age:.0f} s ago"))
    return checks


def check_relay() -> list[Check]:
    from .delivery.probe import check
    from .delivery.transport import RelayConnection
    from .settings import relay_settings

    relay = relay_settings()
    if relay.capture:
        return [Check("relay", WARN, "no relay set: mail goes to the local capture")]
    config = current_app.config
    connection = RelayConnection(
        relay, loopback_only=bool(config["MAIL_LOOPBACK_ONLY"]), ca_file=config["MAIL_CA_FILE"]
    )
    report = check(connection)
    out = []
    for step in report.steps:
        status = OK if step.ok else (FAIL if step.ok is False else WARN)
        out.append(Check(f"relay {step.name}", status, step.detail))
    if relay.security == "none" and report.ok:
        out.append(Check("relay tls", WARN, "no TLS to the relay"))
    return out or [Check("relay", FAIL, "no answer")]


def _relay_addresses(res: dns.resolver.Resolver, host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    found = set()
    for kind in ("A", "AAAA"):
        try:
            found |= {r.address for r in res.resolve(host, kind)}
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
    if not found:  # /etc/hosts and the like
        found = {i[4][0] for i in socket.getaddrinfo(host, None)}
    return found


def _mx(res: dns.resolver.Resolver, name: str) -> list[str]:
    try:
        return [str(r.exchange).rstrip(".") for r in res.resolve(name, "MX")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def spf_allows(res: dns.resolver.Resolver, domain: str, addresses: set[str]) -> str | None:
    """``pass``/``fail``/``softfail``/``neutral`` for ``addresses`` under ``domain``'s
    SPF (ip4, ip6, a, mx, include, redirect, all), or None when there is no record."""
    budget = [SPF_LOOKUPS]
    ips = [ipaddress.ip_address(a) for a in addresses]

    def spend() -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("more than 10 DNS lookups (RFC 7208 permerror)")

    def hosts(name: str, cidr: str) -> bool:
        nets = []
        for kind in ("A", "AAAA"):
            try:
                nets += [
                    f"{r.address}/{cidr}" if cidr else r.address for r in res.resolve(name, kind)
                ]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
        networks = [ipaddress.ip_network(n, strict=False) for n in nets]
        return any(ip.version == net.version and ip in net for net in networks for ip in ips)

    def evaluate(name: str) -> str | None:
        records = [r for r in txt(res, name) if r.lower().split(" ")[:1] == ["v=spf1"]]
        if not records:
            return None
        terms = records[0].split()[1:]
        redirect = None
        for term in terms:
            qualifier = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
            result = qualifier.get(term[0], "pass")
            term = term.lstrip("+-~?")
            mech, _, arg = term.partition(":")
            mech = mech.lower()
            if mech.startswith("redirect="):
                redirect = term.partition("=")[2]
                continue
            if mech in ("ip4", "ip6"):
                net = ipaddress.ip_network(arg, strict=False)
                if any(ip.version == net.version and ip in net for ip in ips):
                    return result
            elif mech.split("/")[0] in ("a", "mx"):
                spend()
                base, _, cidr = term.partition("/")  # a:host/24 -> a:host, 24
                target = base.partition(":")[2] or name
                if base.split(":")[0].lower() == "a":
                    if hosts(target, cidr):
                        return result
                elif any(hosts(mx, cidr) for mx in _mx(res, target)):
                    return result
            elif mech == "include":
                spend()
                if evaluate(arg) == "pass":
                    return result
            elif mech == "all":
                return result
        if redirect:
            spend()
            return evaluate(redirect)
        return "neutral"

    return evaluate(domain)


def _aligned(d: str, from_domain: str, strict: bool) -> bool:
    """DMARC identifier alignment; "relaxed" compares the last two labels, which
    stands in for the organisational domain (the Public Suffix List is not used)."""
    if strict:
        return d == from_domain
    return d.split(".")[-2:] == from_domain.split(".")[-2:]


def check_dns(nameserver: str | None) -> list[Check]:
    from .dkim import DkimError, current_signer
    from .mail import sender_domain
    from .settings import relay_settings

    relay = relay_settings()
    domain = sender_domain(relay).lower()
    res = resolver(nameserver)
    out: list[Check] = []
    try:
        addresses = _relay_addresses(res, relay.host)
        spf = spf_allows(res, domain, addresses)
    except (dns.exception.DNSException, OSError, ValueError) as e:
        spf = None
        out.append(Check("spf", FAIL, f"{domain}: could not be evaluated ({e})"))
    else:
        if spf is None:
            out.append(Check("spf", FAIL, f"{domain} has no SPF record (TXT v=spf1 …)"))
        elif spf == "pass":
            out.append(
                Check("spf", OK, f"{domain} allows the relay ({', '.join(sorted(addresses))})")
            )
        else:
            out.append(
                Check(
                    "spf",
                    FAIL,
                    f"{domain}'s SPF gives {spf} for the relay {relay.host} "
                    f"({', '.join(sorted(addresses))}): add it to the record",
                )
            )
    try:
        signer = current_signer()
    except DkimError as e:
        signer = None
        out.append(Check("dkim", FAIL, str(e)))
    else:
        if signer is None:
            out.append(Check("dkim", FAIL, "no DKIM key: run flask --app app dkim init"))
    dkim_ok = False
    if signer is not None:
        name = f"{signer.selector}._domainkey.{signer.domain}"
        try:
            published = [tags(r) for r in txt(res, name)]
        except dns.exception.DNSException as e:
            published = []
            out.append(Check("dkim", FAIL, f"{name}: {type(e).__name__}"))
        keys = [p.get("p") for p in published]
        if not published:
            out.append(Check("dkim", FAIL, f"no record at {name}; publish: {signer.dns_line()}"))
        elif signer.public_key() in keys:
            dkim_ok = True
            out.append(Check("dkim", OK, f"{name} publishes the configured key"))
        else:
            out.append(
                Check("dkim", FAIL, f"{name} publishes another key; publish: {signer.dns_line()}")
            )
    dmarc = [tags(r) for r in txt(res, f"_dmarc.{domain}") if r.lower().startswith("v=dmarc1")]
    if not dmarc:
        out.append(Check("dmarc", FAIL, f"_dmarc.{domain} has no DMARC record"))
    else:
        policy = dmarc[0].get("p", "none").lower()
        dkim_aligned = (
            dkim_ok
            and signer is not None
            and _aligned(signer.domain, domain, dmarc[0].get("adkim", "r").lower() == "s")
        )
        # The envelope sender is the From address (mail.py): SPF aligns when it passes.
        spf_aligned = spf == "pass"
        if dkim_aligned or spf_aligned:
            by = " and ".join(n for n, a in (("DKIM", dkim_aligned), ("SPF", spf_aligned)) if a)
            out.append(Check("dmarc", OK, f"p={policy}; From <{relay.sender}> aligns by {by}"))
        elif policy in ("reject", "quarantine"):
            out.append(
                Check(
                    "dmarc",
                    FAIL,
                    f"p={policy}, but neither DKIM nor SPF aligns with From <{relay.sender}>: "
                    "receivers will "
                    + ("refuse" if policy == "reject" else "file as spam")
                    + " the appeals",
                )
            )
        else:
            out.append(Check("dmarc", WARN, f"p={policy}; nothing aligns with From yet"))
    return out


def check_public_url() -> Check:
    url = str(current_app.config["PUBLIC_URL"])
    if url.startswith("https://"):
        return Check("public url", OK, f"{url} is https")
    return Check(
        "public url", FAIL, f"{url} is not https: confirmation links would go in the clear"
    )


def run_checks(nameserver: str | None = None) -> list[Check]:
    """Every check, in order; one that raises is reported as failed, not raised."""
    nameserver = nameserver or current_app.config.get("DOCTOR_NAMESERVER")
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("migrations", check_migrations),
        ("redis", check_redis),
        ("relay", check_relay),
        ("dns", lambda: check_dns(nameserver)),
        ("public url", check_public_url),
    ]
    out: list[Check] = []
    for name, step in steps:
        try:
            result = step()
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            current_app.logger.exception("doctor: %s", name)
            result = Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}"[:300])
        out.extend(result if isinstance(result, list) else [result])
    return out
