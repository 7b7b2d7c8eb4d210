"""`gdx-api`: refuses to listen beyond loopback without a token, and serves when started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sqlalchemy.engine import make_url

from gdx_pipeline.api.server import default_workers, is_loopback, main, refusal_to_bind
from gdx_pipeline.api.settings import MAX_BODY_BYTES_ENV, TOKEN_ENV
from gdx_pipeline_tests.postgres_server import made_on_server, postgres_server_url


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert refusal_to_bind(host, token=None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1"])
def test_other_hosts_need_a_token(host: str) -> None:
    assert not is_loopback(host)
    refusal = refusal_to_bind(host, token=None)
    assert refusal is not None and TOKEN_ENV in refusal and host in refusal
    assert refusal_to_bind(host, token="secret") is None


def test_the_command_refuses_to_bind_without_a_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["--host", "0.0.0.0"]) == 2
    message = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in message and TOKEN_ENV in message and "Traceback" not in message


def test_the_command_refuses_a_bad_body_limit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(MAX_BODY_BYTES_ENV, "lots")
    assert main(["--port", "1"]) == 2
    assert MAX_BODY_BYTES_ENV in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_workers_default_to_web_concurrency_else_by_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite, postgres = "sqlite:///data/gdx.sqlite", "postgresql+psycopg://postgres@db:5432/gdx"
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert default_workers(sqlite) == default_workers(postgres) == 3
    for ignored in ("", "0", "-2", "many"):
        monkeypatch.setenv("WEB_CONCURRENCY", ignored)
        assert default_workers(postgres) == 1
    monkeypatch.delenv("WEB_CONCURRENCY")
    assert default_workers(postgres) == 1
    # SQLite does all of a batch's work in the API's processes: two keep its single writer fed.
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert default_workers(sqlite) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert default_workers(sqlite) == 1


def test_the_command_refuses_fewer_than_one_worker(capsys: pytest.CaptureFixture) -> None:
    assert main(["--port", "1", "--workers", "0"]) == 2
    assert "--workers must be 1 or more" in capsys.readouterr().err


def test_gdx_api_serves_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GDX_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.pop("GDX_DATABASE_URL", None)
    env.pop(TOKEN_ENV, None)
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.pop("WEB_CONCURRENCY", None)
    # No --workers: on SQLite gdx-api's default, two worker processes on this 2-core machine.
    server = subprocess.Popen(
        [sys.executable, "-m", "gdx_pipeline.api", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        health = None
        for _ in range(300):  # bounded: up to ~60 s for a cold start on a busy machine
            if server.poll() is not None:
                break
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.status_code == 200, server.stdout.read().decode() if server.poll() is not None else "no answer"
        assert health.json()["dialect"] == "sqlite"
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
        posted = [  # new connections, so both worker processes take some; they share one SQLite file
            httpx.post(f"http://127.0.0.1:{port}/tables/jobs/rows", json={"rows": [{"id": n, "job": f"Job {n}"}]}, timeout=30).json()
            for n in range(1, 21)
        ]
        assert [p["inserted"] for p in posted] == [1] * 20
        assert httpx.get(f"http://127.0.0.1:{port}/tables/jobs/rows", timeout=30).json()["rows"][-1]["id"] == 20
        assert (tmp_path / "data" / "gdx.sqlite").exists()  # the default warehouse: a SQLite file in the data folder
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # Every worker reported its batches to the one Dagster instance before it stopped.
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    try:
        records = instance.fetch_materializations(dg.AssetKey("jobs"), limit=1_000).records
        reported = [request_id for r in records for request_id in r.asset_materialization.metadata["request_ids"].value]
    finally:
        instance.dispose()
    assert sorted(reported) == sorted(p["request_id"] for p in posted)


OPEN_INSTANCE = """
import sys, time
from pathlib import Path
from gdx_pipeline.api.orchestration import instance_at
ready, go, home = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ready.touch()
while not go.exists():
    time.sleep(0.002)
instance_at(home).dispose()
print("opened")
"""


@pytest.mark.postgres
def test_processes_opening_a_new_postgresql_dagster_storage_at_once_all_open_it(tmp_path: Path) -> None:
    """A fresh deployment starts the API beside Dagster's processes, which create Dagster's tables
    in the new storage database at the same moment (the image test once saw the API's CREATE
    TABLE fail and Docker restart it; the API now tries again). Here four start-ups at once all
    open it; this machine did not reproduce the failing race, even with one attempt."""
    server = postgres_server_url()
    name = f"gdx_dagster_{uuid.uuid4().hex[:10]}"
    with made_on_server(server, [f"CREATE DATABASE {name}"], [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]):
        storage = make_url(server).set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(f'storage:\n  postgres:\n    postgres_url: "{storage}"\n')
        go = tmp_path / "go"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        starters = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_INSTANCE, str(tmp_path / f"ready{i}"), str(go), str(home)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(4)) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()  # all four imported: they open the instance at once
        for starter in starters:
            out, err = starter.communicate(timeout=120)
            assert (starter.returncode, out.strip()) == (0, "opened"), err[-3000:]
