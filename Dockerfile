# citeqa: the same install as `make install` (scripts/install.sh), CPU torch, non-root.
FROM python:3.11-slim

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
RUN useradd --create-home --uid 10001 citeqa && mkdir -p /data /app && chown citeqa /data /app
WORKDIR /app

COPY --chown=citeqa pyproject.toml README.md ./
COPY --chown=citeqa scripts/install.sh scripts/install.sh
COPY --chown=citeqa index index
COPY --chown=citeqa service service
COPY --chown=citeqa eval eval
COPY --chown=citeqa corpus corpus
COPY --chown=citeqa models models

USER citeqa
# torch (CPU) first, then the project: the same script `make install` runs.
RUN bash scripts/install.sh /app/.venv
# Build the index of the bundled articles into the image, so the container starts ready; this
# also caches the question embedder's ONNX export in /data/cache, so `serve` loads no torch.
RUN /app/.venv/bin/citeqa index corpus --index-dir /data/index

VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/app/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["/app/.venv/bin/citeqa", "serve"]
