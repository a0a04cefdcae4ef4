# syntax=docker/dockerfile:1
# fedward hospital agent image, CPU build: a Flower SuperNode with fedward's ClientApp
# (`fedward client start`), from this repository. Build it from the repository root:
#
#   docker build -f deploy/docker/hospital.Dockerfile -t fedward-hospital:0.2.0 .
#
# Mounts: /data (the hospital's images, read-only), /certs/ca.crt and /keys/<name>.key
# (read-only; the key readable by UID 10001 only), /cache (read-write: decoded images).
# The default command shows the shape; give the coordinator's address and the hospital's
# key name when running it (see deploy/README.md).
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
LABEL org.opencontainers.image.title="fedward-hospital" \
      org.opencontainers.image.description="fedward hospital agent: Flower SuperNode and ClientApp (CPU)" \
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
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 fedward \
    && useradd --system --uid 10001 --gid fedward --home-dir /home/fedward --create-home \
        --shell /usr/sbin/nologin fedward \
    && mkdir -p /certs /keys /data /cache \
    && chown fedward:fedward /certs /keys /cache
COPY --from=build /opt/fedward /opt/fedward
USER 10001:10001
WORKDIR /home/fedward
VOLUME ["/cache"]
# No port to publish: the agent dials the coordinator (outbound TCP 9092 only). Its
# SuperNode's ClientApp API listens on 127.0.0.1:9094 inside the container.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["fedward", "client", "health", "--port", "9094"]
ENTRYPOINT ["fedward"]
CMD ["client", "start", "--superlink", "coordinator:9092", "--ca", "/certs/ca.crt", "--key", "/keys/hospital.key", \
     "--data", "/data", "--dataset", "pneumoniamnist", "--cache-dir", "/cache"]
