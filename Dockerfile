# syntax=docker/dockerfile:1
# lfops WebUI (LlamaBoard + reviews, runs, registry). Build: docker build -t lfops:0.1.0 .
# Without Docker: bash scripts/image.sh build (buildah; makes a base from Debian packages when no registry answers).
# Training does not run in this image on a cluster: it runs in the training image of a cluster profile
# (docs/cluster.md). Dependencies: requirements-image.lock, every file pinned by its sha256.

# The base, pinned by the digest of its multi-architecture index. Any Debian-based image with Python 3.11 at
# /usr/local/bin/python and the python3.11-venv module works (scripts/image.sh makes one with debootstrap).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# One stage: nothing is compiled here (every dependency is a wheel), so a build stage would only copy the 5 GB venv
# once more. Layers from the slowest-changing to the fastest: system packages, dependencies, lfops.
FROM ${PYTHON_IMAGE}
# git: the config repository is a Git repository (GitPython calls the git binary). tini: signals and zombies.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 lfops \
 && useradd --uid 10001 --gid 10001 --home-dir /home/lfops --create-home --shell /usr/sbin/nologin lfops \
 && mkdir -p /workspace \
 && chown lfops:lfops /workspace
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies: this layer is reused as long as the lock file does not change.
# --no-deps: the lock is the whole closure, so pip installs exactly its files and nothing they would pull in (torch's
# triton and cuda-bindings are GPU-only and left out; pip check allows exactly those). The optional build secret
# pip_cert is a CA bundle for a build machine behind a TLS-intercepting proxy; /wheels, when a builder mounts it, a
# local copy of the same files (pip still checks every hash).
COPY requirements-image.lock ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -m venv /opt/lfops \
 && if [ -d /wheels ]; then set -- --no-index --find-links /wheels; fi \
 && /opt/lfops/bin/pip install --require-hashes --no-deps "$@" -r requirements-image.lock \
 && /opt/lfops/bin/pip check | { grep -vE '^torch [^ ]+ requires (triton|cuda-bindings),' || true; } >/tmp/pip-check \
 && if [ -s /tmp/pip-check ]; then cat /tmp/pip-check; exit 1; fi
COPY pyproject.toml ./
COPY backend ./backend
COPY webui ./webui
COPY configs ./configs
RUN /opt/lfops/bin/pip install --no-deps --no-build-isolation . && rm -rf /src/build /src/*.egg-info

# The root filesystem may be read-only (it is on Kubernetes, k8s/base): caches go to /tmp or the workspace volume.
ENV PATH=/opt/lfops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LFOPS_WORKSPACE=/workspace \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HOME=/workspace/.cache/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /workspace
VOLUME ["/workspace"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "lfops"]
# Listen on all interfaces of the container; sign-in stays on (lfops refuses --no-auth off loopback).
CMD ["webui", "--host", "0.0.0.0", "--port", "7860"]
