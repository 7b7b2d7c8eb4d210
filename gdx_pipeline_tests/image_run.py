"""docker-compose.yml's services as `docker build` and `docker run` command lines, for
scripts/test-image.

Only docker-compose v1 installs on our machines, and it refuses the compose file's top-level
`name:`; rather than bend the file to it, scripts/test-image runs each service with plain
`docker run`, every setting derived here from the compose file so that nothing is written
twice (test_image_run.py checks the derivation against the file). Where it differs from
`docker compose up`, and why:

- Host networking only (`--network host`, `gdx-code` resolving to 127.0.0.1): the machines this
  runs on allow no bridge networks. So the containers listen on the host's ports, and each
  container port is swapped for a free host port in the commands, the health checks and the
  workspace (a copy of deploy/workspace.yaml mounted over the image's).
- PostgreSQL is the machine's own server, not the `postgres` service.
- Named volumes and containers carry the run's own prefix, as `docker compose -p` would.

    python -m gdx_pipeline_tests.image_run RUN_DIR --project NAME [--set KEY=VALUE ...]

writes into RUN_DIR: `.env` (.env.example with the given values and the chosen host ports),
`workspace.yaml`, `plan.env` (shell variables: image, services in start order, their
dependencies, stop grace periods and host ports) and one NUL-separated argv file per command
(`build.argv`, `<service>.argv`).
"""

from __future__ import annotations

import argparse
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from gdx_pipeline_tests.compose import (
    COMPOSE_FILE,
    COMPOSE_VARIABLE,
    DEPLOY_WORKSPACE,
    ENV_EXAMPLE,
    container_port,
    healthcheck_argv,
    host_port,
    read_env_file,
    render_compose,
    start_order,
    with_host_ports,
)

LOOPBACK = "127.0.0.1"
_DURATION_PART = re.compile(r"(\d+)(ms|h|m|s)")
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


def duration_seconds(text: str) -> float:
    """A compose duration (`1m30s`, `60s`, `500ms`) in seconds."""
    parts = _DURATION_PART.findall(str(text))
    if not parts or "".join(number + unit for number, unit in parts) != str(text):
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(int(number) * _SECONDS[unit] for number, unit in parts)


def published_port_variables() -> set[str]:
    """The variables that choose host ports in the compose file's `ports:` (GDX_UI_PORT, ...):
    with host networking they become the ports the containers listen on."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    mappings = [str(mapping) for spec in raw["services"].values() for mapping in spec.get("ports", [])]
    return {
        match.group("braced") or match.group("bare")
        for mapping in mappings
        for match in COMPOSE_VARIABLE.finditer(mapping)
        if match.group(0) != "$$"
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def workspace_server(workspace: dict) -> dict:
    (entry,) = workspace["load_from"]
    return entry["grpc_server"]


@dataclass(frozen=True)
class ImageRun:
    """One run of the image: the compose file rendered with this run's env file, the host port
    each container port is published on, and where the run keeps its files."""

    run_dir: Path
    project: str
    env: dict[str, str]
    compose: dict
    host_ports: dict[int, int]

    @property
    def env_file(self) -> Path:
        return self.run_dir / ".env"

    @property
    def workspace_file(self) -> Path:
        return self.run_dir / "workspace.yaml"

    @property
    def services(self) -> dict[str, dict]:
        return self.compose["services"]

    def container_name(self, service: str) -> str:
        return f"{self.project}-{service}"

    def volume_source(self, source: str) -> str:
        """A host path (relative ones from the compose file's folder), or the run's named volume."""
        if source.startswith((".", "/")):
            return str((COMPOSE_FILE.parent / source).resolve())
        return f"{self.project}_{source}"

    def workspace(self) -> dict:
        """deploy/workspace.yaml with the code server's host port."""
        workspace = yaml.safe_load(DEPLOY_WORKSPACE.read_text())
        server = workspace_server(workspace)
        server["port"] = self.host_ports[server["port"]]
        return workspace

    def build_argv(self, service: str) -> list[str]:
        build = self.services[service]["build"]
        argv = ["docker", "build", "--network", "host", "--tag", self.services[service]["image"]]
        if "dockerfile" in build:
            argv += ["--file", str(COMPOSE_FILE.parent / build["context"] / build["dockerfile"])]
        for name, value in (build.get("args") or {}).items():
            argv += ["--build-arg", f"{name}={value}"]
        return [*argv, str((COMPOSE_FILE.parent / build["context"]).resolve())]

    def run_argv(self, service: str) -> list[str]:
        spec = self.services[service]
        argv = ["docker", "run", "--detach", "--name", self.container_name(service), "--label", f"gdx-image-test={self.project}"]
        argv += ["--network", "host", "--add-host", f"{workspace_server(self.workspace())['host']}:{LOOPBACK}"]
        if spec.get("init"):
            argv.append("--init")
        if "stop_signal" in spec:
            argv += ["--stop-signal", spec["stop_signal"]]
        if "stop_grace_period" in spec:
            argv += ["--stop-timeout", str(int(duration_seconds(spec["stop_grace_period"])))]
        if "restart" in spec:
            argv += ["--restart", spec["restart"]]
        if spec.get("env_file"):
            argv += ["--env-file", str(self.env_file)]
        for name, value in (spec.get("environment") or {}).items():
            argv += ["--env", f"{name}={value}"]
        for volume in spec.get("volumes", []):
            source, target, *mode = volume.split(":")
            argv += ["--volume", ":".join([self.volume_source(source), target, *mode])]
        command = spec["command"]
        for flag in ("-w", "--workspace"):
            if flag in command:
                argv += ["--volume", f"{self.workspace_file}:{command[command.index(flag) + 1]}:ro"]
        healthcheck = spec["healthcheck"]
        argv += ["--health-cmd", shlex.join(with_host_ports(healthcheck_argv(spec), self.host_ports))]
        for option in ("interval", "timeout", "start_period"):
            if option in healthcheck:
                argv += [f"--health-{option.replace('_', '-')}", healthcheck[option]]
        if "retries" in healthcheck:
            argv += ["--health-retries", str(healthcheck["retries"])]
        return [*argv, spec["image"], *with_host_ports(command, self.host_ports)]

    def listening_ports(self) -> dict[str, int]:
        """Each service that listens (publishes a port, or is the workspace's code server), and
        the host port it listens on in this run."""
        server = workspace_server(yaml.safe_load(DEPLOY_WORKSPACE.read_text()))
        listening = {server["host"]: self.host_ports[server["port"]]}
        for name in self.order():
            for mapping in self.services[name].get("ports", []):
                listening[name] = self.host_ports[container_port(mapping)]
        return listening

    def order(self) -> list[str]:
        return start_order(self.services)


def plan_image_run(run_dir: Path, project: str, settings: dict[str, str]) -> ImageRun:
    """The run's env file is .env.example with `settings` over it, as a user would edit it, and
    free host ports for every port a container listens on."""
    env = {**read_env_file(ENV_EXAMPLE), **settings}
    for variable in sorted(published_port_variables()):
        if variable not in settings:
            env[variable] = str(free_port())
    compose = render_compose(env=env)
    host_ports = {}
    for spec in compose["services"].values():
        for mapping in spec.get("ports", []):
            host_ports[container_port(mapping)] = host_port(mapping)
    code_port = workspace_server(yaml.safe_load(DEPLOY_WORKSPACE.read_text()))["port"]
    host_ports.setdefault(code_port, free_port())
    return ImageRun(run_dir=run_dir, project=project, env=env, compose=compose, host_ports=host_ports)


def shell_name(service: str) -> str:
    return service.upper().replace("-", "_")


def write_plan(run: ImageRun) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.env_file.write_text("".join(f"{key}={value}\n" for key, value in run.env.items()))
    run.workspace_file.write_text(yaml.safe_dump(run.workspace(), sort_keys=False))
    order = run.order()
    images = {run.services[name]["image"] for name in order}
    (image,) = images
    builders = [name for name in order if "build" in run.services[name]]
    (run.run_dir / "build.argv").write_bytes(b"\0".join(arg.encode() for arg in run.build_argv(builders[0])))
    variables = {"IMAGE": image, "SERVICES": " ".join(order)}
    for name in order:
        (run.run_dir / f"{name}.argv").write_bytes(b"\0".join(arg.encode() for arg in run.run_argv(name)))
        spec = run.services[name]
        variables[f"DEPENDS_{shell_name(name)}"] = " ".join(d for d in spec.get("depends_on", {}) if d in order)
        variables[f"GRACE_{shell_name(name)}"] = str(int(duration_seconds(spec.get("stop_grace_period", "10s"))))
        variables[f"CONTAINER_{shell_name(name)}"] = run.container_name(name)
    for name, port in run.listening_ports().items():
        variables[f"PORT_{shell_name(name)}"] = str(port)
    (run.run_dir / "plan.env").write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--project", required=True, help="prefix of the run's containers and volumes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a value of the run's .env")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    write_plan(plan_image_run(args.run_dir, args.project, settings))


if __name__ == "__main__":
    main()
