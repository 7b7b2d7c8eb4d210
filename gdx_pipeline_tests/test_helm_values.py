"""deploy/helm/ (values for Dagster's official Helm chart, the API's own Deployment, the shared
data volume) names the image, module, location, ports, environment and secrets that
docker-compose.yml uses, and says in the chart's words what deploy/dagster.yaml says. There is
no cluster here: the files are parsed, and their keys checked against the names the chart's
schema accepts (helm/dagster/schema in dagster-io/dagster, 1.13)."""

import re
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml

from gdx_pipeline_tests.compose import (
    API,
    CODE_SERVER,
    COMPOSE_FILE,
    COMPOSE_VARIABLE,
    DEPLOY_WORKSPACE,
    REPO_ROOT,
    healthcheck_argv,
    option_value,
    read_env_file,
    render_compose,
)

HELM = REPO_ROOT / "deploy" / "helm"
VALUES = HELM / "values.yaml"
DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"
ENV_SECRET = "gdx-env"  # created from the same .env compose reads: kubectl create secret generic gdx-env --from-env-file=.env

# Value names the chart's schema models accept (DagsterHelmValues, UserDeployment, Webserver,
# Daemon, K8sRunLauncherConfig, PostgreSQL, Concurrency). Helm passes an unknown name silently
# wherever the schema allows extras: a typo here would configure nothing.
CHART_VALUES = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
    "migrate", "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig",
}  # fmt: skip
USER_DEPLOYMENT = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "deploymentNamespace",
    "port", "replicaCount", "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity",
    "tolerations", "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "initContainers", "sidecarContainers",
    "deploymentStrategy",
}  # fmt: skip
WEBSERVER = {
    "replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "env", "envConfigMaps",
    "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "readinessProbe", "livenessProbe", "startupProbe", "annotations",
    "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts", "volumes",
}  # fmt: skip
DAEMON = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "checkDbReadyInitContainer", "livenessProbe", "readinessProbe", "startupProbe",
    "annotations", "runMonitoring", "runRetries", "sensors", "schedules", "backfills", "schedulerName", "logFormat",
    "volumeMounts", "volumes", "initContainerResources", "extraContainers", "extraPrependedInitContainers",
}  # fmt: skip
K8S_RUN_LAUNCHER = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
POSTGRESQL = {
    "postgresqlScheme",
    "image",
    "enabled",
    "postgresqlHost",
    "postgresqlUsername",
    "postgresqlPassword",
    "postgresqlDatabase",
    "postgresqlParams",
    "service",
}
CONCURRENCY = {"enabled", "pools", "runs"}
RUN_RETRIES = {"enabled", "maxRetries", "retryOnAssetOrOpFailure"}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def code_location(values) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


@pytest.fixture(scope="module")
def api_manifests() -> dict[str, dict]:
    return {document["kind"]: document for document in yaml.safe_load_all((HELM / "gdx-api.yaml").read_text())}


@pytest.fixture(scope="module")
def api_container(api_manifests) -> dict:
    (container,) = api_manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def compose() -> dict:
    return render_compose()


@pytest.fixture(scope="module")
def instance() -> dict:
    return yaml.safe_load(DEPLOY_INSTANCE.read_text())


def as_kubernetes_reference(compose_value: str) -> str:
    """Compose's `${VAR}` (with any default or error) as Kubernetes' `$(VAR)`."""
    return COMPOSE_VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else f"$({m.group('braced') or m.group('bare')})", compose_value)


def raw_compose_environment(service: str) -> dict[str, str]:
    """A service's `environment:` before interpolation (anchors merged)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["environment"]


def container_env(env: list[dict]) -> dict[str, object]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in env}


def image_name(reference: str) -> str:
    """registry/path/name:tag -> name."""
    return reference.rsplit("/", 1)[-1].split(":", 1)[0]


def test_the_values_use_only_names_the_chart_knows(values, code_location):
    assert set(values) <= CHART_VALUES, set(values) - CHART_VALUES
    assert set(code_location) <= USER_DEPLOYMENT, set(code_location) - USER_DEPLOYMENT
    assert set(values["dagsterWebserver"]) <= WEBSERVER
    assert set(values["dagsterDaemon"]) <= DAEMON
    assert set(values["dagsterDaemon"]["runRetries"]) <= RUN_RETRIES
    assert set(values["runLauncher"]["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER
    assert set(values["postgresql"]) <= POSTGRESQL
    assert set(values["concurrency"]) <= CONCURRENCY


def test_the_chart_version_is_the_dagster_version(values):
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (dagster_pin,) = [d.split("==")[1] for d in dependencies if d.startswith("dagster==")]
    (install,) = [line for line in VALUES.read_text().splitlines() if "helm upgrade --install" in line]
    assert option_value(install.split(), "--version") == dagster_pin
    assert "dagster/dagster" in install.split()


def test_the_code_location_is_composes_gdx_code(code_location, compose, values):
    service = compose["services"][CODE_SERVER]
    assert code_location["name"] == CODE_SERVER
    # Our image, from a registry: compose's image name, an immutable tag instead of `latest`.
    assert image_name(code_location["image"]["repository"]) == image_name(service["image"])
    assert code_location["image"]["tag"] not in ("", "latest")
    # The chart runs `dagster code-server start -h 0.0.0.0 -p <port> <codeServerArgs>`.
    chart_command = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(code_location["port"]), *code_location["codeServerArgs"]]
    assert chart_command == service["command"]
    # The webserver loads it under compose's location name, at the workspace's host and port.
    shipped = yaml.safe_load(DEPLOY_WORKSPACE.read_text())["load_from"][0]["grpc_server"]
    assert values["dagsterWebserver"]["workspace"] == {
        "enabled": True,
        "servers": [
            {"host": code_location["name"], "port": code_location["port"], "name": option_value(service["command"], "--location-name")}
        ],
    }
    assert (shipped["host"], shipped["port"], shipped["location_name"]) == (code_location["name"], code_location["port"], "gdx_pipeline")


def test_the_code_location_and_its_runs_get_composes_environment_and_secrets(code_location, compose, values):
    service = compose["services"][CODE_SERVER]
    env = container_env(code_location["env"])
    compose_env = raw_compose_environment(CODE_SERVER)
    # DAGSTER_HOME is the chart's global.dagsterHome; everything else is set here as in compose.
    assert set(env) | {"DAGSTER_HOME"} == set(compose_env)
    assert values["global"]["dagsterHome"] == service["environment"]["DAGSTER_HOME"]
    assert env["GDX_DATA_DIR"] == service["environment"]["GDX_DATA_DIR"]
    assert env["GDX_DATABASE_URL"] == as_kubernetes_reference(compose_env["GDX_DATABASE_URL"])
    # What compose's containers read from .env comes from the secret made of the same .env;
    # every variable the URL names is one of its keys.
    assert code_location["envSecrets"] == [{"name": ENV_SECRET}] and service["env_file"] == ".env"
    assert set(re.findall(r"\$\((\w+)\)", env["GDX_DATABASE_URL"])) <= set(read_env_file())
    # Runs (their own pods) get the same environment, secrets and data volume.
    assert code_location["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_no_secret_is_written_into_the_files(values, api_container):
    texts = {path.name: path.read_text() for path in HELM.glob("*.yaml")}
    example = read_env_file()
    for secret in ("POSTGRES_PASSWORD", "GDX_API_TOKEN"):
        for name, text in texts.items():
            assert f"{secret}: " not in text and f"{secret}=" not in text.replace("'^POSTGRES_PASSWORD='", ""), f"{name} sets {secret}"
        assert example[secret] not in " ".join(texts.values())
    # Dagster's storage password: the secret the chart is told to read, not a value.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    assert f"create secret generic {values['global']['postgresqlSecretName']}" in texts["values.yaml"]
    assert f"create secret generic {ENV_SECRET} --from-env-file=.env" in texts["values.yaml"]


def test_the_api_is_composes_gdx_api_behind_the_token(api_manifests, api_container, code_location, compose):
    service = compose["services"][API]
    assert api_container["command"] == service["command"]
    assert option_value(api_container["command"], "--host") == "0.0.0.0"
    # Listening beyond loopback, gdx-api refuses to start without the token: it comes from the secret.
    env = container_env(api_container["env"])
    assert env["GDX_API_TOKEN"] == {"secretKeyRef": {"name": ENV_SECRET, "key": "GDX_API_TOKEN"}}
    assert api_container["envFrom"] == [{"secretRef": {"name": ENV_SECRET}}]
    compose_env = raw_compose_environment(API)
    assert set(env) == set(compose_env)
    for name in ("DAGSTER_HOME", "GDX_DATA_DIR"):
        assert env[name] == service["environment"][name], name
    assert env["GDX_DATABASE_URL"] == as_kubernetes_reference(compose_env["GDX_DATABASE_URL"])
    # The same image as the code location; the port and health check compose uses.
    image = code_location["image"]
    assert api_container["image"] == f"{image['repository']}:{image['tag']}"
    (port,) = api_container["ports"]
    assert port["containerPort"] == int(option_value(service["command"], "--port"))
    probe_url = urlsplit(re.search(r"http://[^'\" ]+", " ".join(healthcheck_argv(service))).group(0))
    for probe in ("readinessProbe", "livenessProbe"):
        assert api_container[probe]["httpGet"] == {"path": probe_url.path, "port": port["name"]}
    pod = api_manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == int(service["stop_grace_period"].removesuffix("s"))
    service_manifest = api_manifests["Service"]
    assert service_manifest["spec"]["selector"] == api_manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service_manifest["spec"]["ports"][0]["targetPort"] == port["name"]


def test_one_shared_volume_holds_the_data_folder_for_the_code_location_its_runs_and_the_api(
    api_manifests, api_container, code_location, compose
):
    data_dir = compose["services"][CODE_SERVER]["environment"]["GDX_DATA_DIR"]
    claim = yaml.safe_load((HELM / "gdx-data.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = api_manifests["Deployment"]["spec"]["template"]["spec"]
    for volumes, mounts in ((code_location["volumes"], code_location["volumeMounts"]), (pod["volumes"], api_container["volumeMounts"])):
        (volume,) = volumes
        (mount,) = mounts
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert (mount["name"], mount["mountPath"]) == (volume["name"], data_dir)
    # The image's user (GDX_UID's default) writes there, in the code location and the API alike.
    uid = int(read_env_file()["GDX_UID"])
    for context in (code_location["podSecurityContext"], pod["securityContext"]):
        assert (context["runAsUser"], context["fsGroup"]) == (uid, uid)


def test_the_chart_configures_dagster_as_deploy_dagster_yaml_does(values, instance):
    storage = instance["storage"]["postgres"]["postgres_db"]
    example = read_env_file()
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False, "Dagster's storage is your PostgreSQL, not a pod of the chart"
    assert postgresql["postgresqlScheme"] == storage["scheme"]
    assert (postgresql["postgresqlUsername"], postgresql["postgresqlDatabase"]) == (example["POSTGRES_USER"], example["DAGSTER_PG_DB"])
    assert postgresql["postgresqlDatabase"] != example["GDX_WAREHOUSE_DB"]
    runs = instance["concurrency"]["runs"]
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"] == {
        "maxConcurrentRuns": runs["max_concurrent_runs"],
        "tagConcurrencyLimits": runs["tag_concurrency_limits"],
    }
    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == instance["run_coordinator"]["class"]
    retries = instance["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    monitoring = instance["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "cancelTimeoutSeconds": monitoring["cancel_timeout_seconds"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
    }
    for kind in ("sensors", "schedules"):
        assert daemon[kind] == {"useThreads": instance[kind]["use_threads"], "numWorkers": instance[kind]["num_workers"]}
    retention = values["retention"]
    assert retention["schedule"]["purgeAfterDays"] == instance["retention"]["schedule"]["purge_after_days"]
    assert retention["sensor"]["purgeAfterDays"] == instance["retention"]["sensor"]["purge_after_days"]
    assert values["telemetry"]["enabled"] == instance["telemetry"]["enabled"]


def test_the_kubernetes_image_is_the_compose_image_with_dagster_k8s():
    dockerfile = (HELM / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE).group(1)
    assert base == render_compose()["services"][CODE_SERVER]["image"]
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.MULTILINE)
    # dagster-k8s at the version of dagster-postgres installed in the image (they are released together).
    assert re.search(r'pip install "dagster-k8s==\$\(python -c .*m\.version\("dagster-postgres"\)', dockerfile)
    assert dockerfile.rstrip().splitlines()[-1] == "USER gdx"
