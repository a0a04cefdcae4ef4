# syntax=docker/dockerfile:1
# fedward coordinator image, CPU build: the Flower SuperLink with its ServerApps
# (`fedward server start`) and the model registry (`fedward registry serve`), both from this
# repository. Build it from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t fedward-coordinator:0.2.0 .
#
# Mounts: /certs (from `fedward certs init`, read-only), /state (read-write: Flower's database,
# hospital registry, run directories), /data (optional, read-only: the dataset's .npz for
# server-side test evaluation). Runs as UID 10001, so /certs and /state must be readable by it.
# CPython 3.11 like the constraints; the minor tag follows Debian's security updates (pin a
# digest here for bit-identical rebuilds).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/fedward
ENV PATH=/opt/fedward/bin:$PATH
COPY deploy/docker/constraints.txt /tmp/constraints.txt
# PyTorch's CPU build first, from its own index; then fedward with every dependency pinned.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple \
        --constraint /tmp/constraints.txt torch==2.13.0
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY server /src/server
COPY client /src/client
COPY simulation /src/simulation
COPY cli /src/cli
RUN pip install --no-cache-dir --constraint /tmp/constraints.txt /src \
    && fedward version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="fedward-coordinator" \
      org.opencontainers.image.description="fedward coordinator: Flower SuperLink, ServerApp and model registry (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Telemetry, update checks and runtime dependency installation off in every process
# (the same variables as fedward.common.flower.processes.QUIET_VARIABLES).
ENV PATH=/opt/fedward/bin:$PATH \
    HOME=/home/fedward \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_OFFLINE=1 \
    FEDWARD_STATE_DIR=/state
RUN groupadd --system --gid 10001 fedward \
    && useradd --system --uid 10001 --gid fedward --home-dir /home/fedward --create-home \
        --shell /usr/sbin/nologin fedward \
    && mkdir -p /certs /state /data \
    && chown fedward:fedward /certs /state
COPY --from=build /opt/fedward /opt/fedward
USER 10001:10001
WORKDIR /home/fedward
VOLUME ["/state"]
# 9092: the SuperLink (Fleet API for hospitals, Control API, ServerApp runtime API), TLS.
# 9095: the model registry (HTTPS).
EXPOSE 9092 9095
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["fedward", "server", "health", "--superlink", "127.0.0.1:9092", "--ca", "/certs/ca.crt"]
ENTRYPOINT ["fedward"]
CMD ["server", "start", "--certs", "/certs", "--state", "/state", "--host", "0.0.0.0", "--port", "9092"]
