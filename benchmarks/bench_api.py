"""API benchmark: 1,000-row batches from concurrent clients, against a per-row ORM peer.

    .venv/bin/python benchmarks/bench_api.py [--clients 4] [--batches 25] [--backends sqlite postgres]

For each backend it starts one real `uvicorn` server on loopback the way `gdx-api` serves
(a child process with `--workers`, default gdx-api's; a fresh warehouse and a fresh
DAGSTER_HOME, so every batch is also reported to Dagster), then sends `hired_employees`
batches of 1,000 rows from `--clients` concurrent aiohttp clients, bodies encoded before the
clock starts:

  gdx_pipeline   POST /tables/hired_employees/rows: the real endpoint (validation, set-wise
                 upsert, reject log, ledger, one transaction, a Dagster materialization)
  per-row ORM    POST /peer/per-row/hired_employees/rows: the peer the issue names, taken
                 literally, only here: a typed pydantic body, then
                 `session.add(HiredEmployee(**row))` and a flush per row (one INSERT round trip
                 each), one commit; no upsert, no reject log, no ledger
  ORM add-all    POST /peer/add-all/hired_employees/rows: the same loop without the flush. Of 18
                 public solutions of this challenge with a JSON batch endpoint that we read
                 (benchmarks/results/api.md), 11 insert in one bulk call, 4 like this (`db.add` per
                 row or `add_all`, one commit), 2 execute raw INSERTs row by row, 1 commits per
                 row and none flushes per row. SQLAlchemy 2 turns this loop into multi-row
                 INSERTs, so on the wire it is not per-row. It checks and logs nothing

All run side by side in the same server on the same tables (disjoint ids). Reported:
p50/p99 latency per batch, rows/s over the whole concurrent run (wall clock), and the CPU time
each batch cost the API's processes, a local PostgreSQL server's processes and the clients
(psutil), which shows what the two shared cores are spent on. Results go to stdout and, as a
dated section, to the end of benchmarks/results/api.md. The PostgreSQL backend uses a fresh database
`gdx_api_bench_*` on --postgres-url, dropped afterwards.
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_log import append_run, postgres_version  # noqa: E402

BATCH_ROWS = 1_000
DEPARTMENTS, JOBS = 12, 183
OUR_PATH = "/tables/hired_employees/rows"
PEERS = {"per-row ORM": "/peer/per-row/hired_employees/rows", "ORM add-all": "/peer/add-all/hired_employees/rows"}


# --- the server (child process) ----------------------------------------------------------------


def create_bench_app():  # noqa: ANN201
    """The real app from the environment, plus the peer endpoint (which exists only here)."""
    from typing import Annotated

    from fastapi import Body
    from pydantic import BaseModel
    from sqlalchemy.orm import Session, registry

    from gdx_pipeline.api.server import create_served_app
    from gdx_pipeline.core.warehouse import data_tables

    app = create_served_app()
    engine = app.state.engine

    class HiredEmployeeIn(BaseModel):
        id: int
        name: str
        datetime: datetime
        department_id: int
        job_id: int

    class HiredEmployee:
        def __init__(self, **values: object):
            for name, value in values.items():
                setattr(self, name, value)

    registry().map_imperatively(HiredEmployee, data_tables["hired_employees"])

    def per_row_insert(rows: Annotated[list[HiredEmployeeIn], Body(embed=True, max_length=BATCH_ROWS)]) -> dict:
        with Session(engine) as session:
            for row in rows:
                session.add(HiredEmployee(**row.model_dump()))
                session.flush()
            session.commit()
        return {"inserted": len(rows)}

    def add_all_insert(rows: Annotated[list[HiredEmployeeIn], Body(embed=True, max_length=BATCH_ROWS)]) -> dict:
        with Session(engine) as session:
            for row in rows:
                session.add(HiredEmployee(**row.model_dump()))
            session.commit()
        return {"inserted": len(rows)}

    app.add_api_route(PEERS["per-row ORM"], per_row_insert, methods=["POST"], include_in_schema=False)
    app.add_api_route(PEERS["ORM add-all"], add_all_insert, methods=["POST"], include_in_schema=False)
    return app


def serve(port: int, workers: int) -> None:
    import uvicorn

    from gdx_pipeline.api.server import prepare_dagster_storage
    from gdx_pipeline.defs.resources import dagster_home_from_environment

    prepare_dagster_storage(dagster_home_from_environment())
    uvicorn.run(
        "bench_api:create_bench_app",
        factory=True,
        app_dir=str(ROOT / "benchmarks"),
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


# --- the clients -------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds spent during one run: the API's processes, the database server's, the clients'."""

    server: float
    database: float | None  # None: PostgreSQL on another machine, not measured
    clients: float


class CpuMeter:
    """Counts the CPU time of the server (with its worker processes), of a local PostgreSQL
    server's processes and of this process (the clients) between `start` and `stop`."""

    def __init__(self, server_pid: int, database_url: str):
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        self.server_pid = server_pid
        self.local_postgres = url.get_backend_name() == "postgresql" and url.host in (None, "", "localhost", "127.0.0.1", "::1")
        self._before: tuple[dict[int, float], dict[int, float], float] | None = None

    @staticmethod
    def _cpu_by_pid(processes: list) -> dict[int, float]:
        import psutil

        seconds = {}
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:  # exited meanwhile
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    def _server(self) -> dict[int, float]:
        import psutil

        server = psutil.Process(self.server_pid)
        return self._cpu_by_pid([server, *server.children(recursive=True)])

    def _database(self) -> dict[int, float]:
        import psutil

        if not self.local_postgres:
            return {}
        return self._cpu_by_pid([p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")])

    @staticmethod
    def _own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._before = (self._server(), self._database(), self._own())

    def stop(self) -> Cpu:
        assert self._before is not None, "start() first"
        server, database, own = self._before

        def spent(before: dict[int, float], after: dict[int, float]) -> float:
            return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

        return Cpu(
            server=spent(server, self._server()),
            database=spent(database, self._database()) if self.local_postgres else None,
            clients=self._own() - own,
        )


@dataclass
class Run:
    name: str
    latencies: list[float]
    rows: int
    seconds: float
    cpu: Cpu | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def cpu_ms_per_batch(self) -> str:
        """`server / database / clients` CPU milliseconds per batch."""
        if self.cpu is None:
            return "-"
        batches = len(self.latencies)
        database = "-" if self.cpu.database is None else f"{self.cpu.database / batches * 1000:.1f}"
        return f"{self.cpu.server / batches * 1000:.1f} / {database} / {self.cpu.clients / batches * 1000:.1f}"


def employees(first_id: int) -> list[dict]:
    return [
        {
            "id": first_id + k,
            "name": f"Employee {first_id + k}",
            "datetime": f"2021-{1 + k % 12:02d}-{1 + k % 28:02d}T{k % 24:02d}:{k % 60:02d}:00Z",
            "department_id": 1 + k % DEPARTMENTS,
            "job_id": 1 + k % JOBS,
        }
        for k in range(BATCH_ROWS)
    ]


async def run_clients(
    base_url: str, path: str, name: str, clients: int, batches: int, first_id: int, meter: CpuMeter | None = None
) -> Run:
    import aiohttp

    # Bodies are encoded before the clock starts, and the client is aiohttp (its HTTP parser is C):
    # the clients share the server's two cores, and what they spend is not the server's work.
    # httpx spent ~3.7 ms of CPU per 1,000-row request here, aiohttp ~0.8 (wrk would spend ~0).
    payloads = [
        [json.dumps({"rows": employees(first_id + (c * batches + b) * BATCH_ROWS)}).encode() for b in range(batches)]
        for c in range(clients)
    ]
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as http:

        async def client(bodies: list[bytes]) -> None:
            for body in bodies:
                started = time.perf_counter()
                async with http.post(path, data=body, headers={"Content-Type": "application/json"}) as response:
                    text = await response.text()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    raise RuntimeError(f"{name}: {response.status} {text[:300]}")

        if meter:
            meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(client(bodies) for bodies in payloads))
        seconds = time.perf_counter() - started
        cpu = meter.stop() if meter else None
    return Run(name, latencies, clients * batches * BATCH_ROWS, seconds, cpu)


async def seed(base_url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession(base_url) as http:
        departments = [{"id": i, "department": f"Department {i}"} for i in range(1, DEPARTMENTS + 1)]
        jobs = [{"id": i, "job": f"Job {i}"} for i in range(1, JOBS + 1)]
        for path, rows in (("/tables/departments/rows", departments), ("/tables/jobs/rows", jobs)):
            async with http.post(path, json={"rows": rows}) as response:
                response.raise_for_status()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base_url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during startup")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting, or 503 (HTTPError) until the database answers
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become healthy in time")


def bench_backend(label: str, database_url: str, work: Path, args: argparse.Namespace) -> tuple[int, list[Run]]:
    """(uvicorn workers, runs) for one backend."""
    from gdx_pipeline.api.server import default_workers

    workers = args.workers or default_workers(database_url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    dagster_home = work / f"dagster_home_{label}"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "GDX_DATABASE_URL": database_url,
        "GDX_DATA_DIR": str(work / f"data_{label}"),
        "DAGSTER_HOME": str(dagster_home),
    }
    env.pop("GDX_API_TOKEN", None)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--workers", str(workers)], env=env, cwd=ROOT)
    try:
        wait_until_healthy(base_url, server)
        asyncio.run(seed(base_url))
        # Warm every path (imports, connection pools, statement caches) in every worker, unmeasured.
        asyncio.run(run_clients(base_url, OUR_PATH, "warm-up", workers * 2, 2, 900_000_000))
        for n, path in enumerate(PEERS.values()):
            asyncio.run(run_clients(base_url, path, "warm-up", workers * 2, 1, 950_000_000 + n * 10_000_000))
        from gdx_pipeline.api.orchestration import REPORT_LINGER_SECONDS

        time.sleep(REPORT_LINGER_SECONDS + 1)  # the first report to Dagster (which sets up its storage) happens now, unmeasured
        meter = CpuMeter(server.pid, database_url)
        runs = [asyncio.run(run_clients(base_url, OUR_PATH, "gdx_pipeline", args.clients, args.batches, 1, meter))]
        for n, (name, path) in enumerate(PEERS.items()):
            runs.append(asyncio.run(run_clients(base_url, path, name, args.clients, args.peer_batches, (n + 1) * 100_000_000, meter)))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return workers, runs


def fresh_postgres_database(server_url: str) -> tuple[str, str]:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from gdx_pipeline.core.warehouse import normalize_database_url

    server_url = normalize_database_url(server_url)
    name = f"gdx_api_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), name


def drop_postgres_database(server_url: str, name: str) -> None:
    import sqlalchemy as sa

    from gdx_pipeline.core.warehouse import normalize_database_url

    admin = sa.create_engine(normalize_database_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


def report(results: dict[str, list[Run]], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = f"benchmarks/bench_api.py --clients {args.clients} --batches {args.batches} --peer-batches {args.peer_batches}"
    if args.workers:
        command += f" --workers {args.workers}"
    lines = [
        f"`{command}` on {os.cpu_count()} cores (load average at the end: {load}); "
        "uvicorn with the workers named beside each backend (gdx-api's default for its engine unless --workers); "
        "server and clients on one machine (loopback). `× per-row` is rows/s over the per-row ORM peer's. "
        "`CPU ms / batch`: CPU time during the run per 1,000-row batch of the API server's processes / the local PostgreSQL "
        "server's processes (SQLite runs inside the API) / the clients.",
        "",
        "| backend | endpoint | batches | p50 ms | p99 ms | rows/s | × per-row | CPU ms / batch: API / database / clients |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, runs in results.items():
        per_row = next(run for run in runs if run.name == "per-row ORM")
        for run in runs:
            ratio = run.rows_per_second / per_row.rows_per_second
            lines.append(
                f"| {backend} | {run.name} | {len(run.latencies)} | {run.percentile(0.5) * 1000:,.1f} | "
                f"{run.percentile(0.99) * 1000:,.1f} | {run.rows_per_second:,.0f} | {ratio:,.1f} | {run.cpu_ms_per_batch()} |"
            )
    lines += [
        "",
        "gdx_pipeline: the real endpoint (validation against the dictionary, set-wise upsert, reject log, ledger, "
        "one transaction, a Dagster materialization). per-row ORM: pydantic body, then `session.add` + flush "
        "(one INSERT) per row and one commit. ORM add-all: the same without the flush, which SQLAlchemy 2 batches "
        "into multi-row INSERTs. Neither peer upserts, logs rejects, keeps a ledger or tells Dagster.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default: gdx-api's for each engine)")
    parser.add_argument("--batches", type=int, default=25, help="batches per client for gdx_pipeline (default 25)")
    parser.add_argument("--peer-batches", type=int, default=5, help="batches per client for each peer (default 5)")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("GDX_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return 0

    results: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="gdx_api_bench_") as folder:
        work = Path(folder)
        for backend in args.backends:
            if backend == "sqlite":
                workers, runs = bench_backend("sqlite", f"sqlite:///{work / 'bench.sqlite'}", work, args)
                results[f"SQLite ({workers} worker{'s' if workers > 1 else ''})"] = runs
            else:
                url, name = fresh_postgres_database(args.postgres_url)
                try:
                    workers, runs = bench_backend("postgres", url, work, args)
                    results[f"PostgreSQL ({workers} worker{'s' if workers > 1 else ''})"] = runs
                finally:
                    drop_postgres_database(args.postgres_url, name)
    text = report(results, args)
    print(text)
    postgres = postgres_version(args.postgres_url) if "postgres" in args.backends else None
    append_run("api", f"{BATCH_ROWS:,}-row batches of hired_employees, {args.clients} concurrent clients", text, postgres=postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
