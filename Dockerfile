# syntax=docker/dockerfile:1
# lfops WebUI (LlamaBoard + reviews, runs, registry). Build: docker build -t lfops:0.1.0 .
# Training does not run in this image on a cluster: it runs in the training image of a cluster profile
# (docs/cluster.md). Dependencies are the exact versions of requirements.lock.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lfops
WORKDIR /src
# Dependencies first: this layer is reused as long as the lock file does not change.
COPY requirements.lock ./
RUN /opt/lfops/bin/pip install "pip==25.3" \
 && /opt/lfops/bin/pip install -r requirements.lock
COPY pyproject.toml ./
COPY backend ./backend
COPY webui ./webui
COPY configs ./configs
RUN /opt/lfops/bin/pip install --no-deps .

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
COPY --from=build /opt/lfops /opt/lfops
ENV PATH=/opt/lfops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LFOPS_WORKSPACE=/workspace \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1
USER 10001:10001
WORKDIR /workspace
VOLUME ["/workspace"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "lfops"]
# Listen on all interfaces of the container; sign-in stays on (lfops refuses --no-auth off loopback).
CMD ["webui", "--host", "0.0.0.0", "--port", "7860"]
