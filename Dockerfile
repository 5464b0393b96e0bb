# citeqa: the same install as `make install` (scripts/install.sh, no extras), CPU torch, non-root.
# The build steps live in scripts/container_build.sh; `make check-container` runs this file's
# instructions (and so that script) in a Debian bookworm root made by debootstrap. The base is
# pinned to bookworm: the plain python:3.11-slim tag moved to Debian 13 (trixie) in August 2025.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
    HF_HUB_OFFLINE=1 \
    CITEQA_DATA_DIR=/data \
    CITEQA_HOST=0.0.0.0 \
    CITEQA_PORT=8000

# TOKENIZERS_PARALLELISM stays unset: tokenising a question's 12 rerank pairs in parallel saves
# ~3 ms of the ~96 ms cross-encoder step (p50, 3 alternating runs each; the server never forks).
WORKDIR /app

# The tree, owned by the user `container_build.sh system` creates (uid/gid 10001). citeqa/ holds
# relative symlinks to ../index, ../service, ../eval, ../corpus, ../models: COPY keeps them as
# links, and the folders they point to are copied next to it.
COPY --chown=10001:10001 pyproject.toml README.md LICENSE ./
COPY --chown=10001:10001 scripts/install.sh scripts/container_build.sh scripts/
COPY --chown=10001:10001 citeqa citeqa
COPY --chown=10001:10001 index index
COPY --chown=10001:10001 service service
COPY --chown=10001:10001 eval eval
COPY --chown=10001:10001 corpus corpus
COPY --chown=10001:10001 models models

# As root: the user citeqa (uid 10001) and /data.
RUN bash scripts/container_build.sh system
USER 10001:10001
# As citeqa: torch (CPU) then the project into /app/.venv, then the bundled index in /data/index
# (embedded with the default citeqa-retriever, shipped as INT8 ONNX: `serve` loads no torch).
RUN bash scripts/container_build.sh app

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/app/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["/app/.venv/bin/citeqa", "serve"]
