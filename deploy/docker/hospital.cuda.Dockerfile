# syntax=docker/dockerfile:1
# fedward hospital agent image, CUDA build: a Flower SuperNode with fedward's ClientApp
# (`fedward client start`), from this repository. Build it from the repository root:
#
#   docker build -f deploy/docker/hospital.cuda.Dockerfile -t fedward-hospital:0.2.0-cuda .
#
# Mounts: /data (the hospital's images, read-only), /certs/ca.crt and /keys/<name>.key
# (read-only; the key readable by UID 10001 only), /cache (read-write: decoded images).
# The default command shows the shape; give the coordinator's address and the hospital's
# key name when running it (see deploy/README.md).
#
# The CUDA runtime base image and PyTorch's CUDA build must match: CUDA_IMAGE 12.8 goes with the
# cu128 wheel index. Run it with the NVIDIA Container Toolkit (`docker run --gpus all`, or the
# GPU reservation of deploy/compose/hospital.gpu.yml, or `gpu.enabled` in the Helm chart).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive
# Python 3.11 from Ubuntu (the constraints are pinned for CPython 3.11); apt versions follow
# the base image's security updates, hence unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/fedward
ENV PATH=/opt/fedward/bin:$PATH
COPY deploy/docker/constraints.txt /tmp/constraints.txt
# PyTorch's CUDA build first, from its own index; then fedward with every dependency pinned.
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

FROM ${CUDA_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="fedward-hospital" \
      org.opencontainers.image.description="fedward hospital agent: Flower SuperNode and ClientApp (CUDA)" \
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
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fedward \
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
