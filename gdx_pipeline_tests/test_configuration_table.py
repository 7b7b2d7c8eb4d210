"""The README's Configuration section names every environment variable the project reads: in
Python (`os.environ`, `os.getenv`, `dg.EnvVar`, `*_ENV = "..."` constants), in the scripts and
compose files (`${NAME:-default}`, `${NAME:?message}`), in the deployment's dagster.yaml
(`env: NAME`) and in its shell scripts (`$NAME`)."""

import re

from gdx_pipeline_tests.paths import REPO_ROOT

PYTHON_READS = [
    re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\(|EnvVar(?:\.int)?\()\s*["']([A-Z][A-Z0-9_]+)["']"""),
    re.compile(r"""_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']"""),
]
BRACED_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)[:}-]")
DAGSTER_YAML_ENV = re.compile(r"\benv:\s*([A-Z][A-Z0-9_]+)")
SHELL_REFERENCE = re.compile(r"\$([A-Z][A-Z0-9_]+)")


def variables_read() -> dict[str, set[str]]:
    """Variable name -> the files that read it."""
    found: dict[str, set[str]] = {}

    def add(names, path):
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))

    for folder in ("gdx_pipeline", "gdx_pipeline_tests", "benchmarks"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for pattern in PYTHON_READS:
                add(pattern.findall(text), path)
    for path in [
        *(REPO_ROOT / "scripts").iterdir(),
        REPO_ROOT / ".ci" / "run",
        REPO_ROOT / "docker-compose.yml",
        *(REPO_ROOT / "deploy").rglob("*.yml"),
    ]:
        add(BRACED_REFERENCE.findall(path.read_text(encoding="utf-8")), path)
    for path in (REPO_ROOT / "deploy").rglob("*.yaml"):
        add(DAGSTER_YAML_ENV.findall(path.read_text(encoding="utf-8")), path)
    for path in (REPO_ROOT / "deploy").rglob("*.sh"):
        add(SHELL_REFERENCE.findall(path.read_text(encoding="utf-8")), path)
    return found


def configuration_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Configuration\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_scan_finds_what_we_know_is_read():
    found = variables_read()
    assert {"GDX_DATA_DIR", "GDX_DATABASE_URL", "DAGSTER_HOME", "GDX_API_TOKEN", "POSTGRES_PASSWORD", "CI", "GDX_TEST_WORKERS"} <= set(
        found
    )


def test_the_configuration_section_names_every_variable_read():
    section = configuration_section()
    missing = {name: sorted(paths) for name, paths in variables_read().items() if f"`{name}`" not in section}
    assert missing == {}, f"read but not in the README's Configuration section: {missing}"


# The one reader of the environment per entry point: the code location's resources (which `gdx`
# and `gdx-api` use too) and the API's settings. Anything else gets its configuration from them.
ENVIRONMENT_READERS = {"gdx_pipeline/defs/resources.py", "gdx_pipeline/defs/backups/resources.py", "gdx_pipeline/api/settings.py"}
ANY_READ = re.compile(r"environ\.get\(|environ\[|getenv\(|EnvVar\(")  # whatever the variable's name


def test_only_the_settings_modules_read_the_environment():
    package = REPO_ROOT / "gdx_pipeline"
    readers = {str(path.relative_to(REPO_ROOT)) for path in package.rglob("*.py") if ANY_READ.search(path.read_text(encoding="utf-8"))}
    assert readers == ENVIRONMENT_READERS
