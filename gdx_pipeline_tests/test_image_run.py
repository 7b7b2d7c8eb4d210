"""scripts/test-image runs what docker-compose.yml says: every container's command, health
check, volumes, environment and stop settings, as the script's helper (`image_run`) derives
them, read back here from the very argv files the script executes and compared with the
compose file. The only differences allowed are the ones host networking forces (host ports for
container ports, and the workspace that names the code server's host port)."""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gdx_pipeline_tests.compose import (
    COMPOSE_FILE,
    DATABASE,
    DEPLOY_WORKSPACE,
    ENV_EXAMPLE,
    REPO_ROOT,
    healthcheck_argv,
    read_env_file,
    render_compose,
)

SCRIPT = REPO_ROOT / "scripts" / "test-image"
PROJECT = "gdx-image-test-0123abcd"
# What scripts/test-image sets in the run's .env (values of its own; the keys are the point).
SETTINGS = {
    "GDX_UID": "4321",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "gdx_image_test_0123abcd",
    "POSTGRES_PASSWORD": "0f1e2d3c",
    "DAGSTER_PG_DB": "gdx_image_test_0123abcd_dagster",
    "GDX_WAREHOUSE_DB": "gdx_image_test_0123abcd_warehouse",
    "GDX_API_TOKEN": "a1b2c3",
}
DURATIONS = {"10s": 10, "20s": 20, "30s": 30, "60s": 60}


def docker_run_options() -> argparse.ArgumentParser:
    """`docker run`'s options as the test knows them; anything else in an argv file fails."""
    parser = argparse.ArgumentParser(prog="docker run", add_help=False, exit_on_error=False)
    for flag in ("--detach", "--init"):
        parser.add_argument(flag, action="store_true")
    for flag in (
        "--name",
        "--network",
        "--stop-signal",
        "--restart",
        "--health-cmd",
        "--health-interval",
        "--health-timeout",
        "--health-start-period",
    ):
        parser.add_argument(flag)
    for flag in ("--stop-timeout", "--health-retries"):
        parser.add_argument(flag, type=int)
    for flag in ("--label", "--add-host", "--env-file", "--env", "--volume"):
        parser.add_argument(flag, action="append", default=[])
    parser.add_argument("image")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def read_argv(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")


def read_plan(path: Path) -> dict[str, str]:
    """plan.env as the script's shell reads it (`source`)."""
    return {key: " ".join(shlex.split(value)) for key, _, value in (line.partition("=") for line in path.read_text().splitlines())}


def port_swaps(run: list[str], compose: list[str], host_ports: dict[int, int]) -> list[tuple[str, str]]:
    """The arguments that differ, each checked to differ only by a container port written as
    its host port (alone, or in a loopback URL)."""
    assert len(run) == len(compose), (run, compose)
    swaps = []
    for ran, written in zip(run, compose):
        if ran == written:
            continue
        explained = [
            (container, host)
            for container, host in host_ports.items()
            if ran == written.replace(str(container), str(host)) and (written == str(container) or f"127.0.0.1:{container}/" in written)
        ]
        assert explained, f"{ran!r} is not {written!r} with a host port"
        swaps.append((written, ran))
    return swaps


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    """The helper run as scripts/test-image runs it, into a folder of the test's own."""
    run_dir = tmp_path_factory.mktemp("image-run")
    data_dir = run_dir / "data"
    settings = [f"--set={key}={value}" for key, value in {**SETTINGS, "GDX_HOST_DATA_DIR": str(data_dir)}.items()]
    subprocess.run(
        [sys.executable, "-m", "gdx_pipeline_tests.image_run", str(run_dir), "--project", PROJECT, *settings], check=True, timeout=120
    )
    return run_dir


@pytest.fixture(scope="module")
def run_env(plan) -> dict[str, str]:
    return read_env_file(plan / ".env")


@pytest.fixture(scope="module")
def compose(run_env) -> dict:
    """docker-compose.yml rendered with the run's .env, as `docker compose` would."""
    return render_compose(COMPOSE_FILE, run_env)


@pytest.fixture(scope="module")
def host_ports(compose, plan) -> dict[int, int]:
    """Container port -> host port: compose's `ports:` with the run's .env, plus the code server's."""
    ports = {}
    for service in compose["services"].values():
        for mapping in service.get("ports", []):
            host, container = str(mapping).split(":")[-2:]
            ports[int(container)] = int(host)
    workspace = yaml.safe_load((plan / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    ports[yaml.safe_load(DEPLOY_WORKSPACE.read_text())["load_from"][0]["grpc_server"]["port"]] = workspace["port"]
    return ports


@pytest.fixture(scope="module")
def runs(plan, compose) -> dict[str, argparse.Namespace]:
    parsed = {}
    for name in compose["services"]:
        if name != DATABASE:
            argv = read_argv(plan / f"{name}.argv")
            assert argv[:2] == ["docker", "run"], argv[:2]
            parsed[name] = docker_run_options().parse_args(argv[2:])
    return parsed


def ours(compose) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if name != DATABASE}


def test_the_run_env_file_is_the_example_with_the_scripts_values_and_free_ports(run_env, plan):
    example = read_env_file(ENV_EXAMPLE)
    assert set(run_env) == set(example)
    changed = {key for key in example if run_env[key] != example[key]}
    assert changed <= set(SETTINGS) | {"GDX_HOST_DATA_DIR", "GDX_UI_PORT", "GDX_API_PORT"}
    assert {key: run_env[key] for key in SETTINGS} == SETTINGS
    assert run_env["GDX_HOST_DATA_DIR"] == str(plan / "data")
    # Host networking: published ports are free high ports, not the defaults anything else may use.
    assert all(int(run_env[key]) > 1024 and run_env[key] != example[key] for key in ("GDX_UI_PORT", "GDX_API_PORT"))


def test_every_service_but_the_database_runs_in_depends_on_order(plan, compose):
    order = read_plan(plan / "plan.env")["SERVICES"].split()
    assert sorted(order) == sorted(ours(compose))
    for position, name in enumerate(order):
        for dependency in compose["services"][name].get("depends_on", {}):
            assert dependency == DATABASE or order.index(dependency) < position, f"{name} starts before {dependency}"
        dependencies = read_plan(plan / "plan.env")[f"DEPENDS_{name.upper().replace('-', '_')}"].split()
        assert set(dependencies) == set(compose["services"][name].get("depends_on", {})) - {DATABASE}


def test_the_image_is_built_from_the_compose_files_build_section(plan, compose, run_env):
    argv = read_argv(plan / "build.argv")
    images = {service["image"] for service in ours(compose).values()}
    assert len(images) == 1
    build = compose["services"]["gdx-code"]["build"]
    assert argv[:2] == ["docker", "build"]
    assert argv[argv.index("--tag") + 1] == images.pop() == read_plan(plan / "plan.env")["IMAGE"]
    assert Path(argv[-1]) == (COMPOSE_FILE.parent / build["context"]).resolve()
    build_args = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--build-arg")
    assert build_args == {name: str(value) for name, value in build["args"].items()} == {"GDX_UID": run_env["GDX_UID"]}
    assert argv[argv.index("--network") + 1] == "host"


def test_every_container_runs_the_compose_command_on_host_ports(runs, compose, host_ports):
    for name, service in ours(compose).items():
        run = runs[name]
        assert run.image == service["image"], name
        swaps = port_swaps(run.command, service["command"], host_ports)
        assert all(written.isdigit() for written, _ in swaps), f"{name}: {swaps}"
        # A published port is listened on at the host port compose publishes it on.
        for mapping in service.get("ports", []):
            host, container = str(mapping).split(":")[-2:]
            assert (container, host) in swaps, f"{name} does not listen on host port {host}"


def test_every_container_has_the_compose_health_check(runs, compose, host_ports):
    for name, service in ours(compose).items():
        run, healthcheck = runs[name], service["healthcheck"]
        port_swaps(shlex.split(run.health_cmd), healthcheck_argv(service), host_ports)
        assert (run.health_interval, run.health_timeout, run.health_start_period, run.health_retries) == (
            healthcheck["interval"],
            healthcheck["timeout"],
            healthcheck["start_period"],
            healthcheck["retries"],
        ), name


def test_every_container_gets_the_compose_environment(runs, compose, plan):
    for name, service in ours(compose).items():
        run = runs[name]
        assert run.env_file == ([str(plan / ".env")] if service.get("env_file") else []), name
        assert dict(pair.split("=", 1) for pair in run.env) == {key: str(value) for key, value in service["environment"].items()}, name
    # The run's environment points the containers at the machine's PostgreSQL and the run's data.
    api = dict(pair.split("=", 1) for pair in runs["gdx-api"].env)
    assert api["GDX_DATABASE_URL"] == (
        f"postgresql+psycopg://{SETTINGS['POSTGRES_USER']}:{SETTINGS['POSTGRES_PASSWORD']}@127.0.0.1:5432/{SETTINGS['GDX_WAREHOUSE_DB']}"
    )
    assert api["GDX_API_TOKEN"] == SETTINGS["GDX_API_TOKEN"]


def test_every_container_mounts_the_compose_volumes_and_only_the_workspace_besides(runs, compose, plan, host_ports):
    for name, service in ours(compose).items():
        mounted = {volume.split(":")[1]: volume for volume in runs[name].volume}
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            expected_source = str((COMPOSE_FILE.parent / source).resolve()) if source.startswith((".", "/")) else f"{PROJECT}_{source}"
            assert mounted.pop(target) == ":".join([expected_source, target, *mode]), f"{name}: {target}"
        command = service["command"]
        if "-w" in command:
            assert mounted.pop(command[command.index("-w") + 1]) == f"{plan / 'workspace.yaml'}:{command[command.index('-w') + 1]}:ro"
        assert mounted == {}, f"{name} mounts more than compose says: {mounted}"
    # The workspace is deploy/workspace.yaml with the code server's host port, nothing else.
    shipped = yaml.safe_load(DEPLOY_WORKSPACE.read_text())
    ran = yaml.safe_load((plan / "workspace.yaml").read_text())
    port = shipped["load_from"][0]["grpc_server"]["port"]
    shipped["load_from"][0]["grpc_server"]["port"] = host_ports[port]
    assert ran == shipped
    assert str(plan / "data") in runs["gdx-code"].volume[0]


def test_every_container_starts_and_stops_as_compose_says_on_the_host_network(runs, compose, plan):
    variables = read_plan(plan / "plan.env")
    workspace_host = yaml.safe_load(DEPLOY_WORKSPACE.read_text())["load_from"][0]["grpc_server"]["host"]
    for name, service in ours(compose).items():
        run = runs[name]
        assert run.init is service.get("init", False), name
        assert run.stop_signal == service["stop_signal"], name
        assert run.stop_timeout == DURATIONS[service["stop_grace_period"]] == int(variables[f"GRACE_{name.upper().replace('-', '_')}"]), (
            name
        )
        assert run.restart == service["restart"], name
        assert run.detach and run.network == "host" and run.add_host == [f"{workspace_host}:127.0.0.1"], name
        assert run.name == variables[f"CONTAINER_{name.upper().replace('-', '_')}"] == f"{PROJECT}-{name}"
        assert run.label == [f"gdx-image-test={PROJECT}"]


def test_the_script_takes_every_command_from_the_helper():
    """scripts/test-image executes the argv files; it writes no command, port or healthcheck of
    its own that could drift from docker-compose.yml."""
    script = SCRIPT.read_text()
    assert "python -m gdx_pipeline_tests.image_run" in script
    assert 'argv build\n' in script and 'argv "$service"\n' in script
    for name, service in ours(render_compose()).items():
        for text in (shlex.join(service["command"]), shlex.join(healthcheck_argv(service))):
            assert text not in script, f"scripts/test-image writes {name}'s {text!r} itself"
    for token in ("--health-cmd", "--stop-signal", "--stop-timeout", "--env-file", "--add-host", ":4000", ":3000", ":8000"):
        assert token not in script, token
