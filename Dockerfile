# syntax=docker/dockerfile:1
#
# listener: one container per hydrophone.
#
#   docker build -t listener:cpu .                               # CPU torch (default)
#   docker build -t listener:cuda --build-arg TORCH_VARIANT=cuda .
#   docker run -d --name rpi_orcasound_lab \
#     -v "$PWD/rpi_orcasound_lab.yaml:/config/config.yml:ro" \
#     -v /srv/listener/models:/models:ro \
#     -v listener-rpi_orcasound_lab:/var/lib/listener \
#     -p 9108:9108 listener:cpu
#
# Build args:
#   TORCH_VARIANT=cpu   torch from the PyTorch CPU wheel index (~200 MB of
#                       torch instead of ~5 GB of CUDA libraries).
#   TORCH_VARIANT=cuda  the default torch wheel from PyPI, which bundles the
#                       CUDA runtime, cuDNN and NCCL as pip packages. That is
#                       why the final stage stays python:3.11-slim and not an
#                       nvidia/cuda image: the host needs only the NVIDIA
#                       driver and the NVIDIA container toolkit
#                       (`docker run --gpus all ...`; Kubernetes: the device
#                       plugin), which mount the driver's libcuda into it.
#   FFMPEG=wheel        (default) use the static ffmpeg inside the
#                       imageio-ffmpeg wheel, a dependency of listener anyway:
#                       the same ffmpeg build as a plain `pip install`, and
#                       no apt packages at all in the final stage.
#   FFMPEG=apt          also install Debian's ffmpeg (security updates via
#                       the distribution; ~250 MB more). listener uses the
#                       ffmpeg on PATH first, then the wheel's.
#
# No linter for this file runs here (hadolint is not installable from the
# registries this project uses); tests/deploy/test_dockerfile.py checks its structure.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder ---
# Builds the virtual environment /opt/listener. Compilers live only here, for
# any dependency that arrives as an sdist on some platform.
FROM ${PYTHON_IMAGE} AS builder

ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/listener
ENV PATH=/opt/listener/bin:$PATH

WORKDIR /src

# torch first, in its own layer: it is by far the largest and changes least.
# constraints.txt pins the torch version for both variants.
COPY constraints.txt ./
RUN set -eu; \
    case "$TORCH_VARIANT" in \
      cpu)  pip install -c constraints.txt --index-url "$TORCH_CPU_INDEX" torch ;; \
      cuda) pip install -c constraints.txt torch ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, got '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac

# Then listener and its other dependencies (torch already satisfies the
# constraint, so pip keeps the variant installed above). README.m[d]: copied
# when present, without failing the build when not.
COPY pyproject.toml README.m[d] ./
COPY listener ./listener
RUN pip install -c constraints.txt . \
    && listener --version \
    && python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"

# ---------------------------------------------------------------- runtime ---
FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_VARIANT=cpu
ARG FFMPEG=wheel

LABEL org.opencontainers.image.title="listener" \
      org.opencontainers.image.description="Killer-whale call detector for a live Orcasound hydrophone stream" \
      org.opencontainers.image.licenses="MIT" \
      io.orcasound.listener.torch-variant="${TORCH_VARIANT}"

RUN set -eu; \
    if [ "$FFMPEG" = "apt" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends ffmpeg; \
      rm -rf /var/lib/apt/lists/*; \
    elif [ "$FFMPEG" != "wheel" ]; then \
      echo "FFMPEG must be wheel or apt, got '$FFMPEG'" >&2; exit 1; \
    fi

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can check it and
# volumes can be chowned to it (runAsUser/fsGroup 10001 in deploy/kubernetes).
RUN groupadd --system --gid 10001 listener \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/listener --shell /usr/sbin/nologin listener \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/listener \
    && install -d -m 0755 /config /models

COPY --from=builder /opt/listener /opt/listener

ENV PATH=/opt/listener/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/var/lib/listener \
    LISTENER_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz

# /config/config.yml: the station config (mount read-only). config/stations/
#   has one per node for hosts (model.weights under /var/lib/listener/models/);
#   deploy/kubernetes/overlays/*/config.yml are the same with model.weights
#   under /models.
# /models: the weights (mount read-only).
# /var/lib/listener: state file, webhook outbox, detections, clips; a named
#   volume so a new container resumes where the old one stopped.
VOLUME ["/var/lib/listener"]
WORKDIR /var/lib/listener

USER 10001:10001

# /metrics, /healthz, /readyz (the config must set metrics.host: 0.0.0.0 for
# anything outside the container to reach them).
EXPOSE 9108

# No curl in the slim image: python's urllib. A 503 raises HTTPError, so any
# answer but 200 (or no answer) fails the check. start-period covers loading
# the model; set LISTENER_HEALTHCHECK_URL when the config moves the port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; urllib.request.urlopen(os.environ['LISTENER_HEALTHCHECK_URL'], timeout=4); sys.exit(0)"]

# `docker stop` sends SIGTERM: the daemon drains, flushes its sinks and saves
# its resume point (give it time: `docker stop -t 60`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["listener"]
CMD ["run", "--config", "/config/config.yml"]
