"""docker-compose.yml read the way `docker compose` reads it: YAML anchors merged, `${VAR}`
interpolated from an env file. Shared by the tests that check the deployment's files, the test
that runs its command lines natively, and scripts/test-image, which runs them from the image.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DEPLOY_WORKSPACE = REPO_ROOT / "deploy" / "workspace.yaml"
DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"

DATABASE = "postgres"
CODE_SERVER = "gdx-code"
WEBSERVER = "dagster-webserver"
DAEMON = "dagster-daemon"
API = "gdx-api"
# The processes that talk to the code location over gRPC (they load the workspace).
WORKSPACE_CLIENTS = (WEBSERVER, DAEMON)

_LOOPBACK_URL_PORT = re.compile(r"127\.0\.0\.1:(\d+)/")
COMPOSE_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines, as compose reads an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$` (a literal `$`)."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("-") and unset:
            return arg
        if op and op.endswith("?") and unset:
            raise KeyError(f"{name} is required: {arg}")
        return value or ""

    return COMPOSE_VARIABLE.sub(substitute, text)


def _interpolated(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def render_compose(path: Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> dict:
    """The compose file as `docker compose config` would see it with the shipped env file."""
    return _interpolated(yaml.safe_load(path.read_text()), read_env_file() if env is None else env)


def service_environment(service: dict, env_file: dict[str, str]) -> dict[str, str]:
    """What a container's environment holds: the env file first, `environment:` over it."""
    environment = dict(env_file) if service.get("env_file") else {}
    environment.update({key: str(value) for key, value in (service.get("environment") or {}).items()})
    return environment


def option_value(argv: list[str], *flags: str) -> str:
    for index, arg in enumerate(argv[:-1]):
        if arg in flags:
            return argv[index + 1]
    raise AssertionError(f"none of {flags} in {argv}")


def healthcheck_argv(service: dict) -> list[str]:
    """The healthcheck's command line (the CMD form, or the shell line of CMD-SHELL)."""
    test = service["healthcheck"]["test"]
    kind, rest = test[0], test[1:]
    if kind == "CMD-SHELL":
        return shlex.split(rest[0])
    assert kind == "CMD", f"unexpected healthcheck form {test}"
    return list(rest)


def container_port(mapping: str) -> int:
    """`HOST:CONTAINER` (optionally `IP:HOST:CONTAINER`) -> the container side."""
    return int(str(mapping).split(":")[-1].split("/")[0])


def host_port(mapping: str) -> int:
    """`HOST:CONTAINER` (optionally `IP:HOST:CONTAINER`) -> the host side."""
    return int(str(mapping).split(":")[-2])


def mounts(service: dict) -> dict[str, str]:
    """Container path -> host path or named volume."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def start_order(services: dict[str, dict], leave_out: str = DATABASE) -> list[str]:
    """Service names after the ones they depend on, as compose starts them (`leave_out` is a
    service provided from outside, such as a database server that is already up)."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on", {}):
            if dependency != leave_out and dependency not in order:
                visit(dependency)
        if name not in order:
            order.append(name)

    for name in services:
        if name != leave_out:
            visit(name)
    return order


def with_host_ports(argv: list[str], host_ports: dict[int, int]) -> list[str]:
    """A container command line listening on, or probing, host ports instead: an argument that
    is a container port, or a loopback URL on one, is swapped for the host port."""

    def swap_url(match: re.Match) -> str:
        port = int(match.group(1))
        return f"127.0.0.1:{host_ports.get(port, port)}/"

    swapped = []
    for arg in argv:
        if arg.isdigit() and int(arg) in host_ports:
            swapped.append(str(host_ports[int(arg)]))
        else:
            swapped.append(_LOOPBACK_URL_PORT.sub(swap_url, arg))
    return swapped
