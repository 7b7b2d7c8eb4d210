"""The production deployment's files agree with each other and with the project, checked without
a Docker engine: docker-compose.yml, the Dockerfile, deploy/dagster.yaml, deploy/workspace.yaml,
deploy/compose.external-postgres.yml and .env.example.

Compose is read the way `docker compose` reads it: YAML anchors merged, `${VAR}` interpolated
from the env file (here .env.example, which users copy to .env). The end-to-end proof that the
same files run is test_deployment_e2e.py.
"""

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from dagster._config import process_config
from dagster._config.field import Field
from dagster._core.instance.config import dagster_instance_config, dagster_instance_config_schema
from sqlalchemy.engine import make_url

from gdx_pipeline_tests.compose import (
    API,
    CODE_SERVER,
    COMPOSE_FILE,
    COMPOSE_VARIABLE,
    DAEMON,
    DATABASE,
    DEPLOY_INSTANCE,
    DEPLOY_WORKSPACE,
    WEBSERVER,
    WORKSPACE_CLIENTS,
    container_port,
    healthcheck_argv,
    interpolate,
    mounts,
    option_value,
    read_env_file,
    render_compose,
    service_environment,
)
from gdx_pipeline_tests.paths import REPO_ROOT
from gdx_pipeline_tests.postgres_server import postgres_server_url

EXTERNAL_POSTGRES_FILE = REPO_ROOT / "deploy" / "compose.external-postgres.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
INIT_SCRIPT = REPO_ROOT / "deploy" / "postgres" / "create-warehouse-database.sh"


# --- the Dockerfile, the instance, the project ------------------------------------------------


@dataclass(frozen=True)
class DockerImage:
    """What the Dockerfile puts in the image: its ENV and which repo file lands where."""

    env: dict[str, str]
    workdir: PurePosixPath
    copies: dict[str, Path]

    def source_of(self, container_path: str) -> Path | None:
        """The repository file that ends up at `container_path`, if the Dockerfile copies one."""
        target = PurePosixPath(container_path)
        for destination, source in self.copies.items():
            destination = PurePosixPath(destination)
            if target == destination:
                return source
            if source.is_dir() and destination in target.parents:
                return source / target.relative_to(destination)
        return None


def docker_image(path: Path = DOCKERFILE) -> DockerImage:
    """ARG, ENV, WORKDIR and COPY of a Dockerfile, with `${VAR}` expanded as the builder does."""
    env: dict[str, str] = {}
    copies: dict[str, Path] = {}
    workdir = PurePosixPath("/")
    for instruction in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        instruction = instruction.strip()
        if not instruction or instruction.startswith("#"):
            continue
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword in {"ARG", "ENV"}:
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = interpolate(value, env)
        elif keyword == "WORKDIR":
            workdir = workdir / interpolate(rest.strip(), env)
        elif keyword == "COPY":
            args = [interpolate(a, env) for a in shlex.split(rest) if not a.startswith("--")]
            *sources, destination = args
            into_folder = destination.endswith("/") or len(sources) > 1
            destination_path = workdir / destination
            for source in sources:
                target = destination_path / Path(source).name if into_folder else destination_path
                copies[str(target)] = REPO_ROOT / source
    return DockerImage(env=env, workdir=workdir, copies=copies)


def instance_config(path: Path, folder: Path) -> dict:
    """dagster.yaml validated the way the instance loads it, with `env:` values resolved from
    the current environment (set it first)."""
    (folder / "dagster.yaml").write_text(path.read_text())
    dagster_instance_config(str(folder))  # raises on anything Dagster would refuse
    result = process_config(Field(dagster_instance_config_schema()).config_type, yaml.safe_load(path.read_text()))
    assert result.success, result.errors
    return result.value


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def dependency_names() -> set[str]:
    return {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in pyproject()["project"]["dependencies"]
    }


def console_script_owner(program: str) -> str | None:
    """Which installed distribution provides the console script `program`."""
    for entry_point in importlib.metadata.entry_points(group="console_scripts", name=program):
        return entry_point.dist.name.lower().replace("_", "-") if entry_point.dist else None
    return None


def resolve_entry_point(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_file() -> dict[str, str]:
    return read_env_file()


@pytest.fixture(scope="module")
def compose(env_file) -> dict:
    return render_compose(env=env_file)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def image() -> DockerImage:
    return docker_image()


@pytest.fixture(scope="module")
def workspace_server() -> dict:
    (entry,) = yaml.safe_load(DEPLOY_WORKSPACE.read_text())["load_from"]
    return entry["grpc_server"]


# --- the stack --------------------------------------------------------------------------------


def test_the_stack_runs_the_database_the_code_server_both_dagster_processes_and_the_api(services):
    assert set(services) == {DATABASE, CODE_SERVER, WEBSERVER, DAEMON, API}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} does not come back after a crash or a reboot"
    ours = {name: service for name, service in services.items() if name != DATABASE}
    # One image, built from this repository's Dockerfile, for everything that is ours.
    assert {service["image"] for service in ours.values()} == {services[CODE_SERVER]["image"]}
    assert all(service["build"]["context"] == "." for service in ours.values())
    # Dagster's processes shut down cleanly on SIGINT, and tini (init) hands it on as PID 1.
    assert all(service.get("init") is True and service.get("stop_signal") == "SIGINT" for service in ours.values())


def test_every_service_but_the_database_waits_for_a_healthy_database(services):
    for name, service in services.items():
        if name == DATABASE:
            assert "depends_on" not in service
            continue
        assert service["depends_on"][DATABASE] == {"condition": "service_healthy"}, name
    for name in WORKSPACE_CLIENTS:
        assert services[name]["depends_on"][CODE_SERVER] == {"condition": "service_healthy"}, f"{name} must wait for the code server"


def test_the_database_counts_as_healthy_only_once_it_accepts_tcp_connections(services):
    # On first start the image runs its init scripts on a socket-only server; a socket check
    # would pass before the warehouse database exists.
    argv = healthcheck_argv(services[DATABASE])
    assert argv[0] == "pg_isready"
    assert option_value(argv, "-h", "--host") == "127.0.0.1"
    assert int(option_value(argv, "-p", "--port")) == 5432


def test_every_command_names_a_program_module_and_file_that_exist(services, image):
    project_scripts = pyproject()["project"]["scripts"]
    dependencies = dependency_names()
    for name, service in services.items():
        if name == DATABASE:
            continue  # the postgres image's own entrypoint
        for argv in (service["command"], healthcheck_argv(service)):
            program = argv[0]
            if program == "python":
                pass  # the base image's interpreter
            elif program in project_scripts:
                assert callable(resolve_entry_point(project_scripts[program])), f"{name}: {program} -> {project_scripts[program]}"
            else:
                owner = console_script_owner(program)
                assert owner in dependencies, f"{name}: `{program}` is not a console script of any dependency in pyproject.toml"
            for flag in ("-m", "--module-name"):
                if flag in argv:
                    module = option_value(argv, flag)
                    spec = importlib.util.find_spec(module)
                    assert spec and spec.origin, f"{name}: no module {module}"
                    in_image = image.source_of(str(image.workdir / f"{module.replace('.', '/')}.py"))
                    assert in_image and in_image.resolve() == Path(spec.origin).resolve(), f"{name}: {module} is not copied into the image"
            for arg in argv[1:]:
                if arg.startswith("/") and arg.endswith((".yaml", ".yml", ".py")):
                    source = image.source_of(arg)
                    assert source is not None and source.is_file(), f"{name}: {arg} is not a file the Dockerfile copies from the repository"
    for source in image.copies.values():
        assert source.exists(), f"the Dockerfile copies {source.relative_to(REPO_ROOT)}, which does not exist"
    for source in mounts(services[DATABASE]).values():
        if source.startswith("./"):
            assert (REPO_ROOT / source).is_file(), f"{DATABASE} mounts {source}, which does not exist"


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `relative` out (.dockerignore: last match wins, `!` keeps)."""
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not keep
    return ignored


def test_the_build_context_holds_everything_pip_install_needs(image):
    patterns = [
        line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    needed = {"pyproject.toml", pyproject()["project"]["readme"], "gdx_pipeline", "deploy/dagster.yaml", "deploy/workspace.yaml"}
    copied = {str(source.relative_to(REPO_ROOT)) for source in image.copies.values()}
    assert needed <= copied, f"the Dockerfile does not copy {sorted(needed - copied)}"
    for source in image.copies.values():
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        left_out = [str(f.relative_to(REPO_ROOT)) for f in files if dockerignored(str(f.relative_to(REPO_ROOT)), patterns)]
        assert not left_out, f".dockerignore leaves out files the image needs: {left_out[:5]}"
    # And what must never be baked into an image stays out.
    for secret_or_bulk in (".env", ".git/config", ".venv/bin/python", "data/landing/x.csv"):
        assert dockerignored(secret_or_bulk, patterns), secret_or_bulk


def test_the_image_holds_the_deployment_instance_and_workspace(services, image):
    dagster_home = image.env["DAGSTER_HOME"]
    assert image.source_of(f"{dagster_home}/dagster.yaml") == DEPLOY_INSTANCE
    for name in WORKSPACE_CLIENTS:
        workspace = option_value(services[name]["command"], "-w", "--workspace")
        assert image.source_of(workspace) == DEPLOY_WORKSPACE, name
    for name, service in services.items():
        if name != DATABASE:
            assert service["environment"]["DAGSTER_HOME"] == dagster_home, name
            assert service["environment"]["GDX_DATA_DIR"] == image.env["GDX_DATA_DIR"], name
    # The local workspace at the repository root stays the in-process one.
    (local,) = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    assert "python_module" in local


def test_the_workspace_points_at_the_code_server(services, workspace_server):
    code_server = services[CODE_SERVER]
    command = code_server["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert workspace_server["host"] == CODE_SERVER
    assert int(option_value(command, "-p", "--port")) == workspace_server["port"]
    assert option_value(command, "-h", "--host") == "0.0.0.0", "the code server must listen beyond its own container"
    assert int(option_value(healthcheck_argv(code_server), "-p", "--port")) == workspace_server["port"]
    settings = pyproject()["tool"]["dagster"]
    assert option_value(command, "--location-name") == workspace_server["location_name"] == settings["code_location_name"]
    assert option_value(command, "-m", "--module-name") == settings["module_name"]


@pytest.mark.parametrize(("name", "port_flags"), [(WEBSERVER, ("-p", "--port")), (API, ("--port",))])
def test_published_ports_match_what_the_server_listens_on_and_is_probed_at(services, name, port_flags):
    service = services[name]
    listens = int(option_value(service["command"], *port_flags))
    assert option_value(service["command"], "-h", "--host") == "0.0.0.0"
    assert [container_port(p) for p in service["ports"]] == [listens]
    probe = next(arg for arg in healthcheck_argv(service) if "http://" in arg)
    url = urlsplit(re.search(r"http://[^'\" ]+", probe).group(0))
    assert (url.hostname, url.port) == ("127.0.0.1", listens)


def test_dagster_storage_and_the_warehouse_reach_the_database_service(services, env_file, monkeypatch, tmp_path):
    database = services[DATABASE]
    server_env = service_environment(database, env_file)
    for name in (CODE_SERVER, WEBSERVER, DAEMON, API):
        container_env = service_environment(services[name], env_file)
        for key, value in container_env.items():
            monkeypatch.setenv(key, value)
        config = instance_config(DEPLOY_INSTANCE, tmp_path)
        storage = config["storage"]["postgres"]["postgres_db"]
        assert storage["hostname"] == DATABASE, name
        assert storage["port"] == 5432
        assert (storage["username"], storage["password"], storage["db_name"]) == (
            server_env["POSTGRES_USER"],
            server_env["POSTGRES_PASSWORD"],
            server_env["POSTGRES_DB"],
        ), f"{name}: Dagster's storage is not the database the postgres service creates"
        warehouse = make_url(container_env["GDX_DATABASE_URL"])
        assert (warehouse.drivername, warehouse.host, warehouse.port) == ("postgresql+psycopg", DATABASE, 5432), name
        assert (warehouse.username, warehouse.password) == (server_env["POSTGRES_USER"], server_env["POSTGRES_PASSWORD"])
        # The init script creates this one; it must not be Dagster's (both have a `jobs` table).
        assert warehouse.database == server_env["GDX_WAREHOUSE_DB"] != storage["db_name"]


def test_the_instance_is_postgres_backed_queued_and_retried(env_file, monkeypatch, tmp_path):
    for key, value in env_file.items():
        monkeypatch.setenv(key, value)
    config = instance_config(DEPLOY_INSTANCE, tmp_path)
    # dagster-postgres brings psycopg2; SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["run_monitoring"]["enabled"] is True


def test_the_data_folder_is_one_volume_shared_by_the_code_server_and_the_api(services, image):
    data_dir = image.env["GDX_DATA_DIR"]
    sources = set()
    for name in (CODE_SERVER, API):
        service_mounts = mounts(services[name])
        assert data_dir in service_mounts, f"{name} does not mount the data folder"
        sources.add(service_mounts[data_dir])
        # landing/ -> processed/ and quarantine/ is a rename: they must share one filesystem.
        nested = [target for target in service_mounts if PurePosixPath(data_dir) in PurePosixPath(target).parents]
        assert not nested, f"{name} mounts {nested} inside the data folder; moving files out of landing would fail"
    assert len(sources) == 1, "the code server and the API must see the same data folder"
    # Compute logs are written where the runs execute (the code server) and read by the webserver.
    storage = f"{image.env['DAGSTER_HOME']}/storage"
    assert len({mounts(services[name]).get(storage) for name in (CODE_SERVER, WEBSERVER, DAEMON)}) == 1
    assert mounts(services[CODE_SERVER]).get(storage)
    assert "/var/lib/postgresql/data" in mounts(services[DATABASE])


def test_secrets_come_from_the_env_file_only(services, env_file):
    raw = COMPOSE_FILE.read_text()
    referenced = {m.group("braced") or m.group("bare") for m in COMPOSE_VARIABLE.finditer(raw) if m.group(0) != "$$"}
    required = {m.group("braced") for m in COMPOSE_VARIABLE.finditer(raw) if m.group("op") in {"?", ":?"}}
    assert required <= set(env_file), f"compose requires {sorted(required - set(env_file))}, which .env.example does not define"
    assert referenced <= set(env_file), f".env.example does not document {sorted(referenced - set(env_file))}"
    for secret in ("POSTGRES_PASSWORD", "GDX_API_TOKEN"):
        assert secret in required, f"compose must refuse to start without {secret}"
        assert env_file[secret] not in raw, f"{secret}'s value is written into docker-compose.yml"
    assert all(service.get("env_file") == ".env" for service in services.values())
    # Compose refuses to start, saying which, when .env lacks a secret.
    for secret in ("POSTGRES_PASSWORD", "GDX_API_TOKEN"):
        with pytest.raises(KeyError, match=secret):
            render_compose(env={key: value for key, value in env_file.items() if key != secret})
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_every_setting_the_code_reads_reaches_the_containers(services, env_file):
    """A GDX_* variable read anywhere in the package is in .env.example (every container gets
    it through env_file) or set by compose itself."""
    read = set()
    for path in (REPO_ROOT / "gdx_pipeline").rglob("*.py"):
        read |= set(re.findall(r"[\"'](GDX_[A-Z0-9_]+)[\"']", path.read_text()))
    assert read, "no settings found: has the package moved?"
    set_by_compose = set(services[CODE_SERVER]["environment"]) | set(services[API]["environment"])
    assert read <= set(env_file) | set_by_compose, f"not passed to the containers: {sorted(read - set(env_file) - set_by_compose)}"


def test_the_external_postgres_override_only_probes_the_configured_server(env_file):
    override = render_compose(EXTERNAL_POSTGRES_FILE, env_file)["services"]
    assert set(override) == {DATABASE}
    database = override[DATABASE]
    assert database["entrypoint"][0] != "docker-entrypoint.sh", "the override must not start a second server"
    argv = healthcheck_argv(database)
    # `$$` reaches the container's shell as `$`: the probe reads the container's own settings.
    assert argv[0] == "pg_isready"
    assert option_value(argv, "-h", "--host") == "$POSTGRES_HOST"
    assert option_value(argv, "-p", "--port") == "$POSTGRES_PORT"


def test_the_sensor_and_the_backup_schedule_start_running_by_themselves():
    from gdx_pipeline.definitions import defs

    repository = defs.get_repository_def()
    sensors = {sensor.name: sensor for sensor in repository.sensor_defs}
    schedules = {schedule.name: schedule for schedule in repository.schedule_defs}
    assert "landing_files_sensor" in sensors
    assert "nightly_backup_schedule" in schedules, "the deployment expects a nightly_backup_schedule"
    for instigator in (sensors["landing_files_sensor"], schedules["nightly_backup_schedule"]):
        assert instigator.default_status.value == "RUNNING", (
            f"{instigator.name} must be declared with default_status RUNNING: the deployment's daemon should run it without a click"
        )


@pytest.mark.postgres
def test_the_init_script_creates_the_warehouse_database_once():
    server = make_url(postgres_server_url())
    name = f"gdx_deploy_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "PGHOST": server.host or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "PGPASSWORD": server.password or "",
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_DB": server.database or "postgres",
        "GDX_WAREHOUSE_DB": name,
    }
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(2):  # a second run (say, a re-created container) changes nothing
            result = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}).scalar_one() == 1
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
