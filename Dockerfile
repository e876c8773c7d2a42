# syntax=docker/dockerfile:1
# The specdec image: one image for the coordinator, draft and target workers
# (`specdec serve coordinator|draft|target`) and the model fetch (`specdec models fetch`).
#
#   CPU (default):  docker build -t specdec:0.1.0 .
#   CUDA 12.8:      docker build -t specdec:0.1.0-cu128 \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# The Helm chart (helm/specdec) runs it as uid 10001 with the model cache at /models.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with torch and the project --------------------------
FROM ${PYTHON_IMAGE} AS build
# torch is installed first and pinned: an open range would pull the multi-GB CUDA build.
ARG TORCH_SPEC=torch==2.13.0
# Where torch comes from: the CPU wheel index by default, a CUDA index for GPU images.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A second index for torch's own dependencies (sympy, networkx, ...).
ARG TORCH_EXTRA_INDEX_URL=https://pypi.org/simple
# Optional extras of the project: gguf loading and the Kubernetes discovery client.
ARG SPECDEC_EXTRAS=gguf,k8s

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url "${TORCH_EXTRA_INDEX_URL}" "${TORCH_SPEC}"

WORKDIR /src
COPY . .
RUN pip install ".[${SPECDEC_EXTRAS}]" \
 && specdec --help > /dev/null

# ---- runtime -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="specdec" \
      org.opencontainers.image.description="Distributed lossless speculative decoding over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 specdec \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/specdec --shell /usr/sbin/nologin specdec \
 && mkdir -p /models \
 && chown specdec:specdec /models

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/specdec \
    SPECDEC_CACHE=/models

USER 10001:10001
WORKDIR /home/specdec

# gRPC: coordinator 50051, draft worker 50061, target worker 50071; the HTTP gateway 8000;
# Prometheus metrics 9400.
EXPOSE 50051 50061 50071 8000 9400

ENTRYPOINT ["specdec"]
CMD ["--help"]
