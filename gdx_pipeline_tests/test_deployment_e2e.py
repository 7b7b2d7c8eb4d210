"""The production deployment, run without a Docker engine.

The code server, webserver, daemon and API are started from the very command lines in
docker-compose.yml (container host, ports and paths swapped for local ones), with DAGSTER_HOME
holding deploy/dagster.yaml unchanged and PostgreSQL on the test server: Dagster's storage in
one fresh database, the warehouse in another (both have a `jobs` table). The real files dropped
into landing are picked up by landing_files_sensor, queued and run; a backup and a restore are
launched through the webserver's GraphQL endpoint; every process is stopped by PID with SIGINT.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL, make_url

from gdx_pipeline.core.warehouse import create_warehouse_engine, data_tables, rejected_rows
from gdx_pipeline.defs.ingest.sensors import LANDING_SETTLE_SECONDS
from gdx_pipeline_tests.compose import (
    API,
    CODE_SERVER,
    DATABASE,
    DEPLOY_INSTANCE,
    DEPLOY_WORKSPACE,
    WEBSERVER,
    healthcheck_argv,
    option_value,
    render_compose,
    start_order,
    with_host_ports,
)
from gdx_pipeline_tests.paths import GLOBANT_DATA, GLOBANT_FILES
from gdx_pipeline_tests.postgres_server import made_on_server, postgres_server_url
from gdx_pipeline_tests.warehouse_contents import table_count

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The published reference for the challenge's files.
EXPECTED_ROWS = {"departments": 12, "jobs": 183, "hired_employees": 1929}
EXPECTED_REJECTS = 70

# Generous limits for a loaded 2-core CI machine; reaching one fails the test with the logs.
STARTUP_SECONDS = 120
RUN_SECONDS = 300
STOP_SECONDS = 30

TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
INSTIGATOR_STATUS = """
query InstigatorStatus($schedule: ScheduleSelector!, $sensor: SensorSelector!) {
  scheduleOrError(scheduleSelector: $schedule) { __typename ... on Schedule { scheduleState { status } } ... on Error { message } }
  sensorOrError(sensorSelector: $sensor) { __typename ... on Sensor { sensorState { status } } ... on Error { message } }
}"""
SENSOR_TICKS = """
query SensorTicks($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 10) { status skipReason error { message } } } }
    ... on Error { message }
  }
}"""
RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
}"""


# --- databases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentDatabases:
    server: URL
    dagster: str
    warehouse: str

    def warehouse_url(self) -> str:
        return self.server.set(drivername="postgresql+psycopg", database=self.warehouse).render_as_string(hide_password=False)

    def dagster_url(self) -> str:
        return self.server.set(drivername="postgresql+psycopg", database=self.dagster).render_as_string(hide_password=False)


@pytest.fixture
def databases() -> Iterator[DeploymentDatabases]:
    """Two fresh databases on the test server, dropped (connections and all) afterwards."""
    server = make_url(postgres_server_url())
    suffix = uuid.uuid4().hex[:10]
    created = DeploymentDatabases(server, f"gdx_deploy_{suffix}", f"gdx_deploy_{suffix}_warehouse")
    names = (created.dagster, created.warehouse)
    create = [f'CREATE DATABASE "{name}"' for name in names]
    with made_on_server(server, create, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names]):
        yield created


# --- processes ---------------------------------------------------------------------------------


def _restore_sigint() -> None:
    # A background shell leaves SIGINT ignored, and Dagster's servers then ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServiceProcess:
    """One service of the deployment as a local process, stopped by its PID."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None
    family: list[psutil.Process] = field(default_factory=list)
    stopping: bool = False

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_restore_sigint, start_new_session=True,
            )

    def exited(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} ({' '.join(self.argv)}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> tuple[str, list[str]]:
        """SIGINT, then SIGTERM, then SIGKILL, each by PID. Returns the signal that ended it and
        the children (the code server's gRPC worker, run workers) that outlived it."""
        self.stopping = True
        if self.popen is None:
            return "not started", []
        if self.popen.poll() is not None:
            return f"already exited ({self.popen.returncode})", []
        try:
            self.family = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            self.family = []
        used = "SIGKILL"
        for sig, grace in ((signal.SIGINT, STOP_SECONDS), (signal.SIGTERM, 10)):
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=grace)
                used = sig.name
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            self.popen.kill()
            self.popen.wait(timeout=10)
        _, alive = psutil.wait_procs(self.family, timeout=20)
        leftovers = []
        for child in alive:
            try:
                leftovers.append(" ".join(child.cmdline()))
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return used, leftovers


@dataclass
class LocalDeployment:
    """docker-compose.yml's services as local processes: same commands, local host and ports."""

    folder: Path
    databases: DeploymentDatabases
    compose: dict = field(default_factory=render_compose)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    api_token: str = field(default_factory=lambda: secrets.token_hex(16))
    started_at: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        """Progress on stdout (shown on failure, or with -s): where the minutes go."""
        print(f"[deployment +{time.monotonic() - self.started_at:5.1f} s] {phase}")

    def __post_init__(self) -> None:
        self.dagster_home = self.folder / "dagster_home"
        self.data_dir = self.folder / "data"
        self.dagster_home.mkdir(parents=True)
        self.data_dir.mkdir()
        # The deployment's instance file, byte for byte: only the environment differs.
        shutil.copy(DEPLOY_INSTANCE, self.dagster_home / "dagster.yaml")
        server = yaml.safe_load(DEPLOY_WORKSPACE.read_text())["load_from"][0]["grpc_server"]
        container_ports = {
            CODE_SERVER: server["port"],
            WEBSERVER: int(option_value(self.service(WEBSERVER)["command"], "-p")),
            API: int(option_value(self.service(API)["command"], "--port")),
        }
        self.port_map = {str(port): str(free_port()) for port in container_ports.values()}
        self.ports = {name: int(self.port_map[str(port)]) for name, port in container_ports.items()}
        workspace = yaml.safe_load(DEPLOY_WORKSPACE.read_text())
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=self.ports[CODE_SERVER])
        self.workspace = self.folder / "workspace.yaml"
        self.workspace.write_text(yaml.safe_dump(workspace))

    def service(self, name: str) -> dict:
        return self.compose["services"][name]

    def environment(self) -> dict[str, str]:
        """What .env and docker-compose.yml give each container, pointed at the test server."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "GDX_", "POSTGRES_"))}
        server = self.databases.server
        return {
            **inherited,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{inherited.get('PATH', '')}",
            "DAGSTER_HOME": str(self.dagster_home),
            "POSTGRES_USER": server.username or "postgres",
            "POSTGRES_PASSWORD": server.password or "",
            "POSTGRES_HOST": server.host or "127.0.0.1",
            "POSTGRES_PORT": str(server.port or 5432),
            "DAGSTER_PG_DB": self.databases.dagster,
            "GDX_DATA_DIR": str(self.data_dir),
            "GDX_DATABASE_URL": self.databases.warehouse_url(),
            "GDX_API_TOKEN": self.api_token,
        }

    def local_argv(self, argv: list[str]) -> list[str]:
        """A container command line made local: this venv's programs, loopback, free ports."""
        program, *args = argv
        local_program = sys.executable if program == "python" else str(Path(sys.executable).parent / program)
        container_workspace = option_value(self.service(WEBSERVER)["command"], "-w", "--workspace")
        tokens = {"0.0.0.0": "127.0.0.1", container_workspace: str(self.workspace)}
        host_ports = {int(container): int(local) for container, local in self.port_map.items()}
        return [local_program, *with_host_ports([tokens.get(arg, arg) for arg in args], host_ports)]

    def healthy(self, name: str) -> bool:
        """The service's own compose healthcheck, run locally."""
        try:
            result = subprocess.run(
                self.local_argv(healthcheck_argv(self.service(name))), env=self.environment(), capture_output=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def start_order(self) -> list[str]:
        """Services after the ones they depend on, as compose starts them."""
        order: list[str] = []

        def visit(name: str) -> None:
            for dependency in self.service(name).get("depends_on", {}):
                if dependency != DATABASE and dependency not in order:
                    visit(dependency)
            if name not in order:
                order.append(name)

        for name in self.compose["services"]:
            if name != DATABASE:
                visit(name)
        return order

    def start(self) -> None:
        healthy = {DATABASE}  # the test server, up before the test
        for name in start_order(self.compose["services"]):
            for dependency, condition in self.service(name).get("depends_on", {}).items():
                assert condition == {"condition": "service_healthy"}
                if dependency not in healthy:
                    self.wait_for(lambda d=dependency: self.healthy(d), f"{dependency} to be healthy", STARTUP_SECONDS)
                    healthy.add(dependency)
            process = ServiceProcess(name, self.local_argv(self.service(name)["command"]), self.environment(), self.folder / f"{name}.log")
            self.processes[name] = process
            process.start()
            self.mark(f"started {name}")
        for name in self.processes:
            if name not in healthy:
                self.wait_for(lambda n=name: self.healthy(n), f"{name} to be healthy", STARTUP_SECONDS)

    def wait_for(self, condition: Callable[[], object], what: str, seconds: float) -> object:
        """Poll `condition` until it is truthy. The limit is for a slow machine, not for a missing
        prerequisite: a service that exits fails the wait at once, and a condition that can tell
        it will never hold fails it itself (see `first_sensor_runs`)."""
        deadline = time.monotonic() + seconds
        while True:
            crashed = [p for p in self.processes.values() if p.exited() and not p.stopping]
            if crashed:
                pytest.fail(f"waiting for {what}: {', '.join(p.name for p in crashed)} exited\n" + self.logs())
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting {seconds:.0f} s for {what}\n" + self.logs())
            time.sleep(1)

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.processes.values())

    def stop(self, drain: bool = False) -> dict[str, tuple[str, list[str]]]:
        """Every process, last started first. With `drain`, the code server (where runs execute)
        is stopped only once the runs already launched have finished, as an operator would."""
        stopped = {}
        for name in reversed(list(self.processes)):
            if name == CODE_SERVER and drain:
                self.mark(f"runs so far: {self.run_summary()}")
                self.wait_for(self.no_run_in_flight, "the runs in flight to finish", RUN_SECONDS)
                self.mark(f"runs in flight finished: {self.run_summary()}")
            stopped[name] = self.processes[name].stop()
        return stopped

    def failed_runs(self) -> list[tuple[str, str]]:
        engine = sa.create_engine(self.databases.dagster_url())
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT pipeline_name, run_id FROM runs WHERE status = 'FAILURE' ORDER BY create_timestamp")
                ).all()
                return [(job, run_failure_messages(engine, run_id)[:1500]) for job, run_id in rows]
        finally:
            engine.dispose()

    def run_summary(self) -> str:
        engine = sa.create_engine(self.databases.dagster_url())
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT pipeline_name, status, count(*), round(avg(extract(epoch FROM update_timestamp - create_timestamp))) "
                        "FROM runs GROUP BY 1, 2 ORDER BY 1, 2"
                    )
                ).all()
            return ", ".join(f"{job} {status} x{count} (~{seconds} s)" for job, status, count, seconds in rows)
        finally:
            engine.dispose()

    def no_run_in_flight(self) -> bool:
        engine = sa.create_engine(self.databases.dagster_url())
        try:
            with engine.connect() as conn:
                return not conn.execute(
                    sa.text("SELECT count(*) FROM runs WHERE status IN ('STARTING', 'STARTED', 'CANCELING')")
                ).scalar_one()
        finally:
            engine.dispose()

    # --- talking to it ---

    def graphql(self, query: str, variables: dict) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[WEBSERVER]}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def repository_selector(self) -> dict[str, str]:
        location = option_value(self.service(CODE_SERVER)["command"], "--location-name")
        return {"repositoryLocationName": location, "repositoryName": "__repository__"}

    def instigator_statuses(self, schedule: str, sensor: str) -> tuple[str, str]:
        data = self.graphql(
            INSTIGATOR_STATUS,
            {
                "schedule": {**self.repository_selector(), "scheduleName": schedule},
                "sensor": {**self.repository_selector(), "sensorName": sensor},
            },
        )
        assert data["scheduleOrError"]["__typename"] == "Schedule", data
        assert data["sensorOrError"]["__typename"] == "Sensor", data
        return data["scheduleOrError"]["scheduleState"]["status"], data["sensorOrError"]["sensorState"]["status"]

    def sensor_ticks(self, sensor: str) -> list[dict]:
        data = self.graphql(SENSOR_TICKS, {"sensor": {**self.repository_selector(), "sensorName": sensor}})["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]["ticks"]

    def launch(self, job: str, run_config: dict) -> str:
        params = {"selector": {**self.repository_selector(), "jobName": job}, "runConfigData": run_config}
        result = self.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", f"launching {job}: {result}"
        # The QueuedRunCoordinator takes it; the daemon launches it.
        assert result["run"]["status"] == "QUEUED"
        return result["run"]["runId"]

    def wait_for_run(self, run_id: str) -> str:
        def finished() -> str | None:
            status = self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            return status if status in TERMINAL_STATUSES else None

        return self.wait_for(finished, f"run {run_id}", RUN_SECONDS)

    def api_get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[API]}{path}", timeout=30) as response:
            return json.load(response)


@pytest.fixture
def deployment(tmp_path, databases) -> Iterator[LocalDeployment]:
    local = LocalDeployment(tmp_path, databases)
    try:
        yield local
    finally:
        local.stop()  # a no-op after the test's own stop; kills everything if the test failed early


# --- helpers on the stored rows ----------------------------------------------------------------


def drop_into_landing(data_dir: Path) -> list[str]:
    """Copy the real files in under hidden names (which the sensor ignores), date them past its
    settle time, then rename them: each appears in landing whole, as docs/ingestion.md advises."""
    landing = data_dir / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    names = sorted(GLOBANT_FILES)
    settled = time.time() - LANDING_SETTLE_SECONDS - 60
    for name in names:
        hidden = landing / f".{name}"
        shutil.copy(GLOBANT_DATA / name, hidden)
        os.utime(hidden, (settled, settled))
        os.replace(hidden, landing / name)
    return names


def first_sensor_runs(deployment: LocalDeployment, dagster_db: sa.Engine, waiting: list[str]) -> list[sa.Row]:
    """The landing sensor's runs; a tick that ended without one fails the test at once (the files
    were waiting before the daemon started, so its first tick must request a run)."""
    runs = sensor_runs(dagster_db)
    if runs:
        return runs
    for tick in deployment.sensor_ticks("landing_files_sensor"):
        if tick["status"] in ("SKIPPED", "FAILURE"):
            why = tick["skipReason"] or (tick["error"] or {}).get("message", "").splitlines()[0]
            pytest.fail(
                f"landing_files_sensor ended a tick without a run ({tick['status']}: {why}) while {waiting} waited in landing",
                pytrace=False,
            )
    return []


def sensor_runs(dagster_db: sa.Engine) -> list[sa.Row]:
    with dagster_db.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT r.run_id, r.pipeline_name, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                "WHERE t.key = 'dagster/sensor_name' AND t.value = 'landing_files_sensor' ORDER BY r.create_timestamp"
            )
        ).all()


def run_failure_messages(dagster_db: sa.Engine, run_id: str) -> str:
    with dagster_db.connect() as conn:
        events = conn.execute(
            sa.text(
                "SELECT event FROM event_logs WHERE run_id = :r AND dagster_event_type IN ('STEP_FAILURE', 'PIPELINE_FAILURE') ORDER BY id"
            ),
            {"r": run_id},
        ).scalars()
        return "\n".join(event[:2000] for event in events)


def event_types(dagster_db: sa.Engine, run_id: str) -> dict[str, int]:
    with dagster_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = :r AND dagster_event_type IS NOT NULL GROUP BY 1"),
            {"r": run_id},
        ).all()
    return dict(rows)


def materialized_assets(dagster_db: sa.Engine, run_id: str) -> set[str]:
    with dagster_db.connect() as conn:
        keys = conn.execute(
            sa.text("SELECT DISTINCT asset_key FROM event_logs WHERE run_id = :r AND dagster_event_type = 'ASSET_MATERIALIZATION'"),
            {"r": run_id},
        ).scalars()
        return {dg.AssetKey.from_db_string(key).to_user_string() for key in keys}


def employees(warehouse: sa.Engine) -> list[tuple]:
    table = data_tables["hired_employees"]
    with warehouse.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(table).order_by(table.c.id))]


# --- the proof ---------------------------------------------------------------------------------


def test_the_deployment_ingests_dropped_files_and_restores_through_graphql(deployment: LocalDeployment):
    # Files waiting in landing when the deployment comes up (a backlog; it also spares the test
    # the sensor's 30-second interval): the daemon's first sensor tick picks them up.
    dropped = drop_into_landing(deployment.data_dir)
    deployment.start()
    deployment.mark("all services healthy")
    dagster_db = sa.create_engine(deployment.databases.dagster_url())
    warehouse = create_warehouse_engine(deployment.databases.warehouse_url())
    try:
        health = deployment.api_get("/health")
        assert (health["status"], health["dialect"]) == ("ok", "postgresql")
        # Nobody turned anything on: the schedule and the sensor run by their own default.
        assert deployment.instigator_statuses("nightly_backup_schedule", "landing_files_sensor") == ("RUNNING", "RUNNING")

        # The sensor fires, the run is queued, then succeeds.
        (run_id, job, _) = deployment.wait_for(
            lambda: first_sensor_runs(deployment, dagster_db, dropped), "landing_files_sensor to request a run", RUN_SECONDS
        )[0]
        deployment.mark("sensor requested a run")
        status = deployment.wait_for_run(run_id)
        assert status == "SUCCESS", run_failure_messages(dagster_db, run_id) + deployment.logs()
        deployment.mark("migrate_job succeeded")
        assert job == "migrate_job"

        # Dagster's records are in PostgreSQL: the run, its queueing and its events, the sensor's tick.
        events = event_types(dagster_db, run_id)
        assert {"PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS"} <= set(events)
        assert materialized_assets(dagster_db, run_id) >= set(EXPECTED_ROWS) | {"rejected_rows"}
        with dagster_db.connect() as conn:
            ticks = conn.execute(sa.text("SELECT status FROM job_ticks WHERE type = 'SENSOR'")).scalars().all()
        assert "SUCCESS" in ticks

        # The warehouse (its own database) holds the reference counts; landing is empty again.
        assert {table: table_count(warehouse, table) for table in EXPECTED_ROWS} == EXPECTED_ROWS
        assert table_count(warehouse, rejected_rows.name) == EXPECTED_REJECTS
        assert sorted(p.name for p in (deployment.data_dir / "landing").iterdir()) == []
        assert sorted(p.name for p in (deployment.data_dir / "processed").iterdir() if p.suffix == ".csv") == dropped

        # Back up, lose half the employees, restore them: both runs launched over GraphQL.
        before = employees(warehouse)
        backup_run = deployment.launch("backup_job", {})
        assert deployment.wait_for_run(backup_run) == "SUCCESS", run_failure_messages(dagster_db, backup_run)
        deployment.mark("backup_job succeeded")
        with warehouse.begin() as conn:
            lost = conn.execute(sa.text("DELETE FROM hired_employees WHERE id % 2 = 0")).rowcount
        assert 0 < lost < len(before)
        restore_run = deployment.launch(
            "restore_table_job", {"ops": {"restore_table": {"config": {"table": "hired_employees", "backup": "latest"}}}}
        )
        assert deployment.wait_for_run(restore_run) == "SUCCESS", run_failure_messages(dagster_db, restore_run)
        assert employees(warehouse) == before
        deployment.mark("restore_table_job succeeded")
    finally:
        dagster_db.dispose()
        warehouse.dispose()

    # Every process stops on SIGINT, by PID, and leaves no child behind.
    stopped = deployment.stop(drain=True)
    deployment.mark("all stopped")
    # Whatever else ran meanwhile (the metrics refresh after each load) worked in this deployment too.
    assert deployment.failed_runs() == []
    assert {name: used for name, (used, _) in stopped.items()} == {name: "SIGINT" for name in stopped}, deployment.logs()
    assert {name: left for name, (_, left) in stopped.items() if left} == {}
    assert all(process.exited() for process in deployment.processes.values())
