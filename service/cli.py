"""``citeqa``: serve, index, ask, search and eval from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError

from index.corpus import IndexError_
from index.documents import DocumentError
from service.errors import CiteQAError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Extractive question answering over your articles, with exact citations.")

DocsOpt = typer.Option(None, "--docs", help="folder of articles (default: the bundled corpus)")
IndexOpt = typer.Option(None, "--index-dir", help="index folder (default: in the data directory)")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings(**values: Any):
    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


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
             **extra: Any):
    """A started QA (index loaded and brought up to date); errors end the command."""
    from service.pipeline import QA

    settings = _settings(docs_dir=docs, index_dir=index_dir, **extra)
    qa = QA(settings)
    try:
        report = qa.start(rebuild=rebuild, progress=_progress_bar("indexing"))
    except (IndexError_, DocumentError, CiteQAError, OSError) as exc:
        _fail(str(exc))
    for problem in qa.skipped:
        typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
    return qa, report


@app.command()
def serve(docs: Optional[Path] = DocsOpt, index_dir: Optional[Path] = IndexOpt,
          host: Optional[str] = typer.Option(None, help="default 127.0.0.1"),
          port: Optional[int] = typer.Option(None, help="default 8000")) -> None:
    """Index the articles (if needed) and serve the HTTP API."""
    import uvicorn

    from service.api.app import create_app

    settings = _settings(docs_dir=docs, index_dir=index_dir, host=host, port=port)
    if not Path(settings.docs_dir).is_dir():
        _fail(f"{settings.docs_dir}: not a directory")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@app.command("index")
def index_cmd(directory: Path = typer.Argument(..., help="folder of articles"),
              index_dir: Optional[Path] = IndexOpt,
              rebuild: bool = typer.Option(False, help="discard the existing index first")) -> None:
    """Index (or incrementally update the index of) a folder of articles."""
    if not directory.is_dir():
        _fail(f"{directory}: not a directory")
    qa, report = _open_qa(directory, index_dir, rebuild=rebuild)
    idx = qa.index
    typer.echo(f"indexed {len(idx.files)} files ({len(idx.passages)} passages, "
               f"{len(idx.sentences)} sentences) in {qa.settings.resolved_index_dir}: "
               f"{len(report.added)} added, {len(report.updated)} updated, "
               f"{len(report.removed)} removed, {len(report.unchanged)} unchanged")
    if qa.skipped:
        raise typer.Exit(1)


def _query(kind: str, question: str, top_k: int, as_json: bool, docs: Path | None,
           index_dir: Path | None) -> None:
    qa, _ = _open_qa(docs, index_dir)
    try:
        response = qa.ask(question, top_k=top_k) if kind == "ask" else qa.search(question, top_k=top_k)
    except CiteQAError as exc:
        _fail(str(exc))
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


@app.command("eval")
def eval_cmd(
    questions: Optional[Path] = typer.Option(None, help="JSONL question set (default: ours)"),
    squad: Optional[Path] = typer.Option(None, help="SQuAD v1.1/v2.0 JSON file"),
    limit: Optional[int] = typer.Option(None, min=1, help="first N questions only"),
    articles: Optional[int] = typer.Option(None, min=1, help="SQuAD: first K articles only"),
    titles: Optional[list[str]] = typer.Option(
        None, "--title", help="SQuAD: only the article with this title (repeatable)"),
    url: Optional[str] = typer.Option(None, help="evaluate a running server instead"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the JSON report here"),
    compare: Optional[Path] = typer.Option(None, help="an earlier JSON report: show deltas"),
    sweep: bool = typer.Option(False, help="sweep the abstention threshold"),
    max_false_abstain: float = typer.Option(
        0.05, min=0.0, max=1.0, help="--sweep: cap on false abstention for the recommendation"),
    ablations: bool = typer.Option(False, help="lexical / dense / hybrid / hybrid+rerank (12-layer, distilled 6-layer) / hybrid+rerank+reader, side by side"),
    only: Optional[list[str]] = typer.Option(
        None, "--ablation", help="run only this ablation (repeatable), e.g. --ablation hybrid+rerank --ablation hybrid+rerank+reader"),
    dump: Optional[Path] = typer.Option(None, help="write every response as JSONL"),
    docs: Optional[Path] = DocsOpt,
    retrieval: Optional[str] = typer.Option(None, help="hybrid | lexical | dense"),
    reranker: Optional[str] = typer.Option(None, help="distilled | onnx | off | CrossEncoder name/path"),
    extractor: Optional[str] = typer.Option(None, help="sentence | reader"),
    threshold: Optional[float] = typer.Option(None, help="abstention threshold"),
    work_dir: Path = typer.Option(Path(".eval"), help="imported corpora and their indexes"),
) -> None:
    """Evaluate retrieval, answers, citations and abstention on a question set."""
    from eval.app import EvalOptions, run_eval
    from eval.dataset import DatasetError

    for path, what in ((questions, "question set"), (squad, "SQuAD file"), (compare, "report")):
        if path is not None and not path.is_file():
            _fail(f"{path}: {what} not found")
    overrides = {k: v for k, v in {"docs_dir": docs, "retrieval": retrieval, "reranker": reranker,
                                   "extractor": extractor, "abstain_threshold": threshold}.items()
                 if v is not None}
    _settings(**overrides)  # validate before any work
    opts = EvalOptions(questions=questions, squad=squad, limit=limit, articles=articles,
                       titles=titles or None,
                       url=url,
                       json_path=json_path, compare=compare, sweep=sweep,
                       max_false_abstain=max_false_abstain, ablations=ablations, only=only or None,
                       dump=dump, work_dir=work_dir, overrides=overrides)

    def bar(desc: str, total: int):
        from tqdm import tqdm

        # disable=None: a bar on a terminal, silence in logs and CI.
        return tqdm(total=total, desc=desc[:60], unit="q", file=sys.stderr, disable=None)

    try:
        run_eval(opts, echo=typer.echo, progress_factory=bar)
    except (DatasetError, IndexError_, DocumentError, CiteQAError, OSError) as exc:
        _fail(str(exc))
    except json.JSONDecodeError as exc:
        _fail(f"{compare}: not a JSON report ({exc})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
