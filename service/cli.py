"""``citeqa``: serve, index, ask and search from the command line.

The console script is ``citeqa.cli:main``, which adds the ``eval`` command (``citeqa.eval.cli``)
to this app: the harness sits on top of the service, so the service never imports it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from citeqa.index.errors import CiteQAError, InvalidInput
from citeqa.service.models import AskRequest, validated

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Extractive question answering over your articles, with exact citations.")

DocsOpt = typer.Option(None, "--docs", help="folder of articles (default: the bundled corpus)")
IndexOpt = typer.Option(None, "--index-dir", help="index folder (default: in the data directory)")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_settings(**values: Any):
    from citeqa.service.settings import Settings

    try:
        return validated(Settings, **{k: v for k, v in values.items() if v is not None})
    except InvalidInput as exc:
        fail(str(exc))


def _progress_bar(desc: str):
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def progress(name: str, done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="file", file=sys.stderr,
                                disable=None)
        bar = state["bar"]
        bar.n = done
        bar.set_postfix_str(name[:40])
        bar.refresh()
        if done >= total:
            bar.close()

    return progress


def _open_qa(docs: Path | None, index_dir: Path | None, *, rebuild: bool = False,
             embedder_for: Any = None, **extra: Any):
    """A started QA (index loaded and brought up to date); errors end the command.
    ``embedder_for(settings)``: the document embedder to use (``--engine ray``), closed after
    the start."""
    from citeqa.service.pipeline import QA

    settings = load_settings(docs_dir=docs, index_dir=index_dir, **extra)
    if not Path(settings.docs_dir).is_dir():  # before any model is loaded
        fail(f"{settings.docs_dir}: not a directory")
    embedder = None
    try:
        if embedder_for is not None:
            embedder = embedder_for(settings)
        qa = QA(settings, embedder=embedder)
        report = qa.start(rebuild=rebuild, progress=_progress_bar("indexing"))
    except (CiteQAError, OSError) as exc:
        fail(str(exc))
    except Exception as exc:  # Ray's own errors (cluster unreachable, an actor died)
        if embedder is None:
            raise
        fail(f"{type(embedder).__name__} failed: {type(exc).__name__}: {exc}")
    finally:
        if embedder is not None:
            embedder.close()
    for problem in qa.skipped:
        typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
    return qa, report


@app.command()
def serve(docs: Optional[Path] = DocsOpt, index_dir: Optional[Path] = IndexOpt,
          host: Optional[str] = typer.Option(None, help="default 127.0.0.1"),
          port: Optional[int] = typer.Option(None, help="default 8000")) -> None:
    """Index the articles (if needed) and serve the HTTP API. SIGTERM or Ctrl-C stop accepting,
    finish the requests in flight and exit 0."""
    import signal

    import uvicorn

    from citeqa.service.api.app import create_app

    settings = load_settings(docs_dir=docs, index_dir=index_dir, host=host, port=port)
    if not Path(settings.docs_dir).is_dir():
        fail(f"{settings.docs_dir}: not a directory")

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            super().handle_exit(sig, frame)
            # SIGTERM is how service managers stop a server: after the graceful shutdown,
            # uvicorn would raise it again so that the process dies by it (exit status -15);
            # a clean stop is exit status 0.
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    # One JSON line per request from citeqa.access (service/api/observe.py) replaces uvicorn's
    # access log.
    import logging

    access = logging.getLogger("citeqa.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level="info", access_log=False)
    Server(config).run()


@app.command("index")
def index_cmd(directory: Path = typer.Argument(..., help="folder of articles"),
              index_dir: Optional[Path] = IndexOpt,
              rebuild: bool = typer.Option(False, help="discard the existing index first"),
              engine: str = typer.Option(
                  "local", "--engine", metavar="[local|ray]",
                  help="embed documents in this process (local) or with Ray Data (ray)"),
              ray_batch_size: int = typer.Option(256, "--ray-batch-size", min=1,
                                                 help="texts per Ray actor call"),
              ray_concurrency: str = typer.Option(
                  "1", "--ray-concurrency",
                  help="Ray actors, each holding the model: 2, or min-max (1-4) to autoscale"),
              ray_address: Optional[str] = typer.Option(
                  None, "--ray-address", envvar="RAY_ADDRESS", show_envvar=True,
                  help="Ray cluster (ray://host:10001); default: a local Ray on 127.0.0.1")) -> None:
    """Index (or incrementally update the index of) a folder of articles."""
    if engine not in ("local", "ray"):
        fail(f"--engine {engine!r}: choose local or ray")
    if not directory.is_dir():
        fail(f"{directory}: not a directory")
    embedder_for = None
    if engine == "ray":
        # Documents are embedded on Ray; questions (and the index's model name) stay the
        # in-process embedder's, so `serve` and `ask` open this index as any other.
        from citeqa.index.ray_embed import RayEmbedder

        def embedder_for(settings):
            return RayEmbedder(settings.embedding_model, batch_size=ray_batch_size,
                               concurrency=ray_concurrency, address=ray_address or "local",
                               threads=settings.threads, backend=settings.embedding_backend,
                               cache_dir=settings.cache_dir)
    qa, report = _open_qa(directory, index_dir, rebuild=rebuild, embedder_for=embedder_for)
    stats = qa.stats()
    typer.echo(f"indexed {stats.documents} files ({stats.passages} passages, "
               f"{stats.sentences} sentences) in {stats.index_dir}: "
               f"{len(report.added)} added, {len(report.updated)} updated, "
               f"{len(report.removed)} removed, {len(report.unchanged)} unchanged")
    if qa.skipped:
        raise typer.Exit(1)


def _query(kind: str, question: str, top_k: int, as_json: bool, docs: Path | None,
           index_dir: Path | None) -> None:
    try:  # the request is checked before any model is loaded
        validated(AskRequest, question=question, top_k=top_k)
    except InvalidInput as exc:
        fail(str(exc))
    qa, _ = _open_qa(docs, index_dir)
    try:
        response = qa.ask(question, top_k=top_k) if kind == "ask" else qa.search(question, top_k=top_k)
    except CiteQAError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    if kind == "ask":
        if response.no_answer:
            typer.echo("No answer in these articles.")
        for i, a in enumerate(response.answers, start=1):
            c = a.citation
            typer.echo(f"{i}. {a.text}\n   [{c.file} ¶{c.paragraph}, chars {c.start}-{c.end}] "
                       f"score {a.score:.3f}")
    if kind == "search" or not response.answers:
        for i, p in enumerate(response.passages, start=1):
            snippet = p.text if len(p.text) < 240 else p.text[:237] + "..."
            typer.echo(f"{i}. [{p.file} ¶{p.paragraph}, chars {p.start}-{p.end}] "
                       f"score {p.score:.3f}\n   {snippet}")


@app.command()
def ask(question: str = typer.Argument(...), top_k: int = typer.Option(5, "--top-k"),
        as_json: bool = typer.Option(False, "--json", help="print the full JSON response"),
        docs: Optional[Path] = DocsOpt, index_dir: Optional[Path] = IndexOpt) -> None:
    """Answer a question with cited spans, or say the articles do not answer it."""
    _query("ask", question, top_k, as_json, docs, index_dir)


@app.command()
def search(question: str = typer.Argument(...), top_k: int = typer.Option(5, "--top-k"),
           as_json: bool = typer.Option(False, "--json"),
           docs: Optional[Path] = DocsOpt, index_dir: Optional[Path] = IndexOpt) -> None:
    """Retrieve the best passages for a question (no answer extraction)."""
    _query("search", question, top_k, as_json, docs, index_dir)


def main() -> None:
    app()
