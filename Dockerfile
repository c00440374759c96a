# agentdata images, one multi-stage file:
#
#   docker build -t agentdata .                              # runtime (the default, last stage)
#   docker build --target emulator -t agentdata-emulator .   # the Snowflake emulator, for dev
#
# The runtime image runs every role: `agentdata serve` (its default command), and
# `agentdata worker`, `agentdata beat` and `agentdata flower` (docker-compose.yml sets
# the command per service). Dependencies come from requirements.lock in a layer of
# their own, so editing the source rebuilds only the last, small layers.

ARG PYTHON_IMAGE=python:3.11-slim

# -- base: Python, a virtualenv on PATH, no stray bytecode or buffered logs -------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && groupadd --system --gid 10001 agentdata \
 && useradd --system --uid 10001 --gid agentdata --create-home --home-dir /home/agentdata \
        --shell /usr/sbin/nologin agentdata

# -- deps: the runtime dependencies, every version pinned by requirements.lock -----------
# requirements.lock pins the runtime and the development tools alike; the image takes
# pyproject's runtime list and lets the lock fix every version (-c), so it holds exactly
# the locked versions of what the server needs and none of the test tooling.
FROM base AS deps
WORKDIR /build
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > runtime.in \
 && pip install -r runtime.in -c requirements.lock

# -- wheel: the project itself, built once (source changes bust only this and below) -----
FROM base AS wheel
WORKDIR /build
COPY pyproject.toml README.md ./
COPY agentdata ./agentdata
COPY flight_server ./flight_server
COPY control_api ./control_api
COPY mcp_server ./mcp_server
COPY workers ./workers
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- emulator: the fakesnow Snowflake emulator (docker compose --profile dev) ------------
FROM base AS emulator
COPY requirements.lock /tmp/requirements.lock
RUN pip install -c /tmp/requirements.lock "fakesnow[server]" && rm /tmp/requirements.lock
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "fakesnow", "--server", "--host", "0.0.0.0", "--port", "8080"]

# -- runtime: server, worker, beat and flower ---------------------------------------------
FROM base AS runtime
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels \
 && mkdir -p /app/data /app/beat && chown agentdata:agentdata /app/data /app/beat
WORKDIR /app
# Bind all interfaces inside the container; what is reachable is decided by the
# published ports (docker-compose.yml), not by the bind address.
ENV AGENTDATA_HOST=0.0.0.0
USER 10001:10001
EXPOSE 8815 8000
# Liveness of `agentdata serve`: GET /healthz over HTTP, or HTTPS when TLS is on (the
# probe talks to itself on 127.0.0.1, so it skips certificate checks; under mutual TLS
# it presents the server's own certificate). Other roles set their own health checks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; e = os.environ.get; cert = e('AGENTDATA_TLS_CERT'); ctx = ssl._create_unverified_context() if cert else None; e('AGENTDATA_TLS_CLIENT_CA') and ctx.load_cert_chain(cert, e('AGENTDATA_TLS_KEY')); r.urlopen(('https' if cert else 'http') + '://127.0.0.1:' + e('AGENTDATA_HTTP_PORT', '8000') + '/healthz', timeout=5, context=ctx)"]
CMD ["agentdata", "serve"]
