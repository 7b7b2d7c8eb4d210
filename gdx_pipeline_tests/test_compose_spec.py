"""The compose files are valid Compose Specification documents, checked with check-jsonschema
and the specification's JSON schema that it ships (`vendor.compose-spec`). Only
docker-compose v1 installs on our machines, and it rejects the top-level `name:` the
specification allows; the schema is the judge instead of that tool."""

import subprocess
import sys
from pathlib import Path

import pytest

from gdx_pipeline_tests.compose import COMPOSE_FILE, REPO_ROOT

COMPOSE_FILES = [COMPOSE_FILE, REPO_ROOT / "deploy" / "compose.external-postgres.yml"]


def check_compose_spec(*paths: Path) -> subprocess.CompletedProcess:
    validator = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(validator), "--builtin-schema", "vendor.compose-spec", *map(str, paths)], capture_output=True, text=True, timeout=120
    )


def test_the_compose_files_follow_the_compose_specification():
    result = check_compose_spec(*COMPOSE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


@pytest.mark.parametrize(
    ("mistake", "original", "replacement", "reported"),
    [
        # A misspelled key in the anchor every service of ours merges: the schema sees it in each.
        (
            "misspelled key",
            "  stop_signal: SIGINT\n",
            "  stop_sginal: SIGINT\n",
            ["gdx-code", "dagster-webserver", "dagster-daemon", "gdx-api", "stop_sginal"],
        ),
        (
            "unknown dependency condition",
            "        condition: service_healthy\n      gdx-code:",
            "        condition: healthy\n      gdx-code:",
            ["condition"],
        ),
        (
            "ports not a list",
            '    ports:\n      - "${GDX_API_PORT:-8000}:8000"\n',
            '    ports: "${GDX_API_PORT:-8000}:8000"\n',
            ["gdx-api", "ports"],
        ),
    ],
)
def test_the_validator_refuses_a_compose_file_that_breaks_the_specification(tmp_path, mistake, original, replacement, reported):
    text = COMPOSE_FILE.read_text()
    assert original in text, f"the compose file changed: update the {mistake} case"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(original, replacement, 1))
    result = check_compose_spec(broken)
    assert result.returncode == 1, f"{mistake} passed validation: {result.stdout}"
    for word in reported:
        assert word in result.stdout, f"{mistake}: {word!r} not reported in {result.stdout}"
