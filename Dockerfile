# One image for the whole gdx_pipeline deployment: the user-code gRPC server, the Dagster
# webserver and daemon, and the REST API. docker-compose.yml picks the command per service.
FROM python:3.11-slim

# The container user owns the bind-mounted data folder; match it to the host user (`id -u`).
ARG GDX_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    GDX_DATA_DIR=/opt/gdx/data

WORKDIR /opt/dagster/app

# Dependencies first, read from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project itself, installed from pyproject.toml like any package.
COPY README.md ./
COPY gdx_pipeline ./gdx_pipeline
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# The deployment's Dagster instance and workspace (see deploy/).
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/app/workspace.yaml

# Services run as an unprivileged user who owns only what they write: Dagster's local storage
# (compute logs; a volume shared by the Dagster services) and the data folder.
RUN useradd --uid "${GDX_UID}" --create-home gdx \
 && mkdir -p "${DAGSTER_HOME}/storage" "${GDX_DATA_DIR}" \
 && chown gdx "${DAGSTER_HOME}" \
 && chown -R gdx "${DAGSTER_HOME}/storage" "${GDX_DATA_DIR}"
USER gdx

EXPOSE 3000 4000 8000
