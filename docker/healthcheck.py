"""The compose services' healthchecks: each proves its process does its work, not that
a process exists (the container's own state already says that).

``python docker/healthcheck.py CHECK [ARGS]``, exit 0 when healthy, 1 with the reason:

* ``http URL [--oc-auth]``: the URL answers 200 (the API's ``/healthz``, the OpenCode
  daemon's ``/global/health``, Flower's ``/healthcheck``); ``--oc-auth`` sends the
  daemon's basic auth (OC_USERNAME, OC_PASSWORD) when OC_PASSWORD is set;
* ``worker``: a Celery worker on this host (its node name ends in ``@$HOSTNAME``,
  whatever it is called before the ``@``) answers a ping over the broker;
* ``beat --max-age S``: beat on this host stamped its row of ``app.processes`` in the
  last S seconds (its scheduler stamps it every few seconds as it ticks; ``kodo doctor``
  judges the same stamp);
* ``stream``: this container holds an established connection to every daemon of
  OC_BASE_URL (the collector follows each one's event stream; a container has its
  own network namespace, so the only such connections are the collector's).

Python's standard library and the image's own packages only: the slim image has no
curl, and a check must not need the network beyond the service it asks.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

ESTABLISHED = "01"
"""The state column of ``/proc/net/tcp`` for an established connection."""


class Unhealthy(Exception):
    """The check failed; the message says why."""


def check_http(url: str, timeout_s: float, auth: tuple[str, str] | None = None) -> str:
    if urlsplit(url).scheme not in ("http", "https"):
        raise Unhealthy(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url)  # noqa: S310 - http(s) only, checked above
    if auth is not None:
        pair = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url} answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"{url} did not answer: {exc}") from exc
    if status != 200:
        raise Unhealthy(f"{url} answered {status}")
    return f"{url} answered 200"


def check_worker(broker_url: str, hostname: str, timeout_s: float) -> str:
    """A worker whose node name is ``<anything>@hostname`` answers a ping."""
    from celery import Celery  # the image's own dependency; only this check needs it

    app = Celery("kodo-healthcheck", broker=broker_url, set_as_current=False)
    try:
        replies = app.control.ping(timeout=timeout_s)
    except Exception as exc:  # any broker failure is the answer
        raise Unhealthy(f"no ping through the broker: {exc}") from exc
    finally:
        app.close()
    nodes = [node for reply in replies for node in reply]
    mine = [node for node in nodes if node.rpartition("@")[2] == hostname]
    if not mine:
        raise Unhealthy(f"no worker on {hostname} answered a ping (answered: {nodes or 'none'})")
    return f"{', '.join(mine)} answered a ping"


def check_beat(database_url: str, hostname: str, max_age_s: float) -> str:
    """Beat on ``hostname`` stamped ``last_seen_at`` in the last ``max_age_s`` seconds."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from shared.db.engine import make_engine
    from shared.db.models import WorkerProcess

    newest = func.max(WorkerProcess.last_seen_at)
    query = select(func.extract("epoch", func.now() - newest)).where(
        WorkerProcess.kind == "beat", WorkerProcess.hostname == hostname
    )
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            age = conn.execute(query).scalar()
    except SQLAlchemyError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise Unhealthy(f"cannot read app.processes: {reason}") from exc
    finally:
        engine.dispose()
    if age is None:
        raise Unhealthy(f"no beat on {hostname} has ticked")
    if float(age) > max_age_s:
        raise Unhealthy(
            f"beat on {hostname} last ticked {float(age):.0f} s ago (more than {max_age_s:g} s)"
        )
    return f"beat on {hostname} ticked {float(age):.1f} s ago"


def established_peers(
    tables: Iterable[str],
) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The remote (address, port) of every established connection in ``/proc/net/tcp*``
    text (addresses are hex in host byte order, 4 bytes at a time)."""
    peers: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != ESTABLISHED:
                continue
            hex_addr, _, hex_port = fields[2].partition(":")
            raw = bytes.fromhex(hex_addr)
            native = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(native)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            peers.add((address, int(hex_port, 16)))
    return peers


def daemon_endpoints(
    base_url: str,
) -> dict[str, set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]]:
    """Each daemon URL of OC_BASE_URL (comma-separated) with the addresses it resolves to."""
    endpoints: dict[str, set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]] = {}
    for url in (u.strip() for u in base_url.split(",") if u.strip()):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise Unhealthy(f"{url} does not resolve: {exc}") from exc
        endpoints[url] = {(ipaddress.ip_address(info[4][0]), port) for info in infos}
    return endpoints


def check_stream(base_url: str, tables: Iterable[str]) -> str:
    peers = established_peers(tables)
    endpoints = daemon_endpoints(base_url)
    if not endpoints:
        raise Unhealthy("OC_BASE_URL names no daemon")
    missing = [url for url, addresses in endpoints.items() if not addresses & peers]
    if missing:
        raise Unhealthy(f"no open event stream to {', '.join(missing)}")
    return f"following {', '.join(endpoints)}"


def _proc_tables() -> list[str]:
    return [Path(p).read_text() for p in ("/proc/net/tcp", "/proc/net/tcp6") if Path(p).exists()]


def run(argv: Sequence[str], env: dict[str, str]) -> str:
    parser = argparse.ArgumentParser(prog="healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per probe")
    checks = parser.add_subparsers(dest="check", required=True)
    http = checks.add_parser("http")
    http.add_argument("url")
    http.add_argument("--oc-auth", action="store_true")
    checks.add_parser("worker")
    beat = checks.add_parser("beat")
    beat.add_argument("--max-age", type=float, required=True)
    checks.add_parser("stream")
    args = parser.parse_args(argv)
    if args.check == "http":
        password = env.get("OC_PASSWORD", "")
        auth = (env.get("OC_USERNAME", "opencode"), password) if args.oc_auth and password else None
        return check_http(args.url, args.timeout, auth)
    if args.check == "worker":
        return check_worker(_required(env, "REDIS_URL"), socket.gethostname(), args.timeout)
    if args.check == "beat":
        database_url = _required(env, "DATABASE_URL")
        return check_beat(database_url, socket.gethostname(), args.max_age)
    return check_stream(_required(env, "OC_BASE_URL"), _proc_tables())


def _required(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise Unhealthy(f"{name} is not set")
    return value


def main() -> int:
    try:
        print(run(sys.argv[1:], dict(os.environ)))
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
