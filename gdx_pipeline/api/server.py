"""`gdx-api`: serve the API with uvicorn.

    gdx-api [--host 127.0.0.1] [--port 8000]

Without GDX_API_TOKEN anybody who can reach the port could write, so the server then refuses
any address but loopback and says why.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import socket
import sys

from fastapi import FastAPI

from gdx_pipeline.api.settings import TOKEN_ENV, ApiSettings, SettingsError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def default_workers() -> int:
    """WEB_CONCURRENCY when set (uvicorn's and gunicorn's convention), else 1.

    On a 2-core machine that also runs the database, one worker measured better than two
    (benchmarks/bench_api.py: p99 86-102 ms against 121-125 ms on PostgreSQL, the same on
    SQLite): a second process only competes with the database for the cores. Where the
    database runs elsewhere and there are cores to spare, raise it."""
    configured = os.environ.get("WEB_CONCURRENCY", "").strip()
    return int(configured) if configured.isdigit() and int(configured) > 0 else 1


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def refusal_to_bind(host: str, token: str | None) -> str | None:
    """Why the server must not listen on `host`, or None when it may."""
    if token or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host}: {TOKEN_ENV} is not set, so anyone who can reach that address could write to "
        f"the warehouse. Set {TOKEN_ENV} to a long random secret (clients then send 'Authorization: Bearer <token>'), "
        f"or listen on loopback only (--host {DEFAULT_HOST})."
    )


def create_served_app() -> FastAPI:
    """The application as `gdx-api` serves it, in each worker process.

    Once it is built, everything alive (Dagster, pandas, the app) is frozen out of the garbage
    collector: a full collection otherwise walks that heap and stalls every request in flight
    for ~0.1 s now and then.
    """
    from gdx_pipeline.api.app import create_app

    app = create_app()
    gc.collect()
    gc.freeze()
    return app


def prepare_dagster_storage() -> None:
    """Create the instance's storage once, before several workers would race to create it."""
    if os.environ.get("DAGSTER_HOME"):
        import dagster as dg

        dg.DagsterInstance.get().dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gdx-api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="uvicorn worker processes (default: $WEB_CONCURRENCY, else 1)"
    )
    args = parser.parse_args(argv)

    refusal = refusal_to_bind(args.host, os.environ.get(TOKEN_ENV))
    if refusal:
        print(f"gdx-api: {refusal}", file=sys.stderr)
        return 2
    try:
        ApiSettings.from_environment()
    except SettingsError as error:
        print(f"gdx-api: {error}", file=sys.stderr)
        return 2

    import uvicorn

    if args.workers > 1:
        prepare_dagster_storage()
    uvicorn.run(
        "gdx_pipeline.api.server:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
    return 0
