"""``citeqa eval``: the evaluation harness's command, added to the service's CLI app by
``citeqa.cli`` (the console script)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from citeqa.index.errors import CiteQAError
from citeqa.service.cli import DocsOpt, fail, load_settings


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
    from citeqa.eval.app import EvalOptions, run_eval

    for path, what in ((questions, "question set"), (squad, "SQuAD file"), (compare, "report")):
        if path is not None and not path.is_file():
            fail(f"{path}: {what} not found")
    overrides = {k: v for k, v in {"docs_dir": docs, "retrieval": retrieval, "reranker": reranker,
                                   "extractor": extractor, "abstain_threshold": threshold}.items()
                 if v is not None}
    load_settings(**overrides)  # validate before any work
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
    except (CiteQAError, OSError) as exc:
        fail(str(exc))
    except json.JSONDecodeError as exc:
        fail(f"{compare}: not a JSON report ({exc})")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the command-line app."""
    app.command("eval")(eval_cmd)
