"""The serving layer: retrieval, reranking, extraction, the ``QA`` pipeline, the HTTP API and
the CLI. The public names are re-exported by :mod:`citeqa`."""
