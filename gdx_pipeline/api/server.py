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

from gdx_pipeline.api.settings import TOKEN_ENV, ApiSettings, SettingsError, configured_workers
from gdx_pipeline.core.warehouse import is_sqlite_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def default_workers(database_url: str) -> int:
    """WEB_CONCURRENCY when set (uvicorn's and gunicorn's convention), else by where the
    warehouse does its work.

    PostgreSQL: 1. Its own processes do most of a batch's work, so on a machine that also runs
    the database a second API process only competes with it (fewer rows/s, a worse p99). Where
    the database runs elsewhere and there are cores to spare, raise it.

    SQLite: 2 where there are 2 cores or more. All of a batch's work happens in the API's
    process, and one process runs its Python on one core at a time; SQLite's single writer
    is busy about half of a batch's time, so a second process keeps it fed and a third would
    mostly queue for it. Both measured with benchmarks/bench_api.py: benchmarks/results/api.md.
    """
    configured = configured_workers()
    if configured:
        return configured
    if is_sqlite_url(database_url):
        return min(2, os.cpu_count() or 1)
    return 1


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
    now and then.
    """
    from gdx_pipeline.api.app import create_app

    app = create_app()
    gc.collect()
    gc.freeze()
    return app


def prepare_dagster_storage(dagster_home: str | None) -> None:
    """Create the instance's storage once, before several workers would race to create it (a
    process outside, such as the webserver, may still race: `orchestration.instance_at` retries)."""
    if dagster_home:
        from gdx_pipeline.api.orchestration import instance_at

        instance_at(dagster_home).dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gdx-api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument(
        "--workers",
        type=int,
        help="uvicorn worker processes (default: $WEB_CONCURRENCY, else 2 on SQLite and 1 on PostgreSQL)",
    )
    args = parser.parse_args(argv)

    try:
        settings = ApiSettings.from_environment()
    except SettingsError as error:
        print(f"gdx-api: {error}", file=sys.stderr)
        return 2
    refusal = refusal_to_bind(args.host, settings.token)
    if refusal:
        print(f"gdx-api: {refusal}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"gdx-api: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
        return 2
    workers = args.workers or default_workers(settings.warehouse.url())

    import uvicorn

    if workers > 1:
        prepare_dagster_storage(settings.dagster_home)
    uvicorn.run(
        "gdx_pipeline.api.server:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
    return 0
