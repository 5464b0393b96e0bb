"""``citeqa eval``: prepare a dataset and its corpus, run it in-process or over HTTP, report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citeqa.eval.dataset import DatasetError, EvalQuestion, load_questions, read_corpus
from citeqa.eval.report import build_report, dumps, markdown_table, render, render_comparison, sweep
from citeqa.eval.runner import (
    CitationChecker, HttpTarget, InProcessTarget, QuestionResult, Target, corpus_key,
    dump_results, run_questions, write_corpus,
)
from citeqa.eval.squad import load_squad
from citeqa.service.abstention import resolve_threshold

DEFAULT_QUESTIONS = Path(__file__).resolve().parent / "questions.jsonl"
DEFAULT_WORK_DIR = Path(".eval")

# Each ablation is a set of settings, not a code path: the same QA with other settings.
ABLATIONS: dict[str, dict[str, Any]] = {
    "lexical": {"retrieval": "lexical", "reranker": "off"},
    "dense": {"retrieval": "dense", "reranker": "off"},
    "hybrid": {"retrieval": "hybrid", "reranker": "off"},
    "hybrid+rerank": {"retrieval": "hybrid", "reranker": "onnx"},
    "hybrid+rerank-distilled": {"retrieval": "hybrid", "reranker": "distilled"},
    # The trained span reader after the default ranking: the two extractors side by side.
    "hybrid+rerank+reader": {"retrieval": "hybrid", "reranker": "onnx", "extractor": "reader"},
}


@dataclass
class Dataset:
    name: str
    docs_dir: Path
    corpus: dict[str, str]
    questions: list[EvalQuestion]
    index_dir: Path


@dataclass
class EvalOptions:
    questions: Path | None = None
    squad: Path | None = None
    limit: int | None = None
    articles: int | None = None
    titles: list[str] | None = None
    url: str | None = None
    json_path: Path | None = None
    compare: Path | None = None
    sweep: bool = False
    # A wrong "not in these articles" hides an answer the user cannot see; a wrong answer
    # still shows its citation. So the recommended threshold caps false abstention.
    max_false_abstain: float = 0.05
    ablations: bool = False
    # A subset of ABLATIONS by name (implies ablations), e.g. the two extractors only.
    only: list[str] | None = None
    dump: Path | None = None
    work_dir: Path = DEFAULT_WORK_DIR
    overrides: dict[str, Any] = field(default_factory=dict)


def prepare_datasets(opts: EvalOptions) -> list[Dataset]:
    from citeqa.service.settings import Settings

    datasets: list[Dataset] = []
    if opts.squad is not None:
        squad = load_squad(opts.squad, limit=opts.limit, articles=opts.articles,
                           titles=opts.titles)
        key = corpus_key(squad.documents)
        root = opts.work_dir / f"squad-{key}"
        write_corpus(squad.documents, root / "docs")
        selection = "".join([f", first {opts.limit} questions" if opts.limit else "",
                             f", first {opts.articles} articles" if opts.articles else "",
                             f", articles {'+'.join(opts.titles)}" if opts.titles else ""])
        datasets.append(Dataset(f"SQuAD {squad.version} {opts.squad.name}{selection}",
                                root / "docs", squad.documents, squad.questions, root / "index"))
    if opts.questions is not None or opts.squad is None:
        settings = Settings(**{k: v for k, v in opts.overrides.items() if k == "docs_dir"})
        docs_dir = Path(settings.docs_dir)
        corpus = read_corpus(docs_dir)
        path = opts.questions or DEFAULT_QUESTIONS
        questions = load_questions(path, corpus)
        if opts.limit:
            questions = questions[: opts.limit]
        key = corpus_key(corpus)
        datasets.append(Dataset(f"{path.name} over {docs_dir.name}/", docs_dir, corpus,
                                questions, opts.work_dir / f"own-{key}" / "index"))
    return datasets


def select_ablations(opts: EvalOptions) -> dict[str, dict[str, Any]]:
    """The settings to run, by column label ("" alone: one run with the options' settings)."""
    if opts.only:
        unknown = [name for name in opts.only if name not in ABLATIONS]
        if unknown:
            raise DatasetError(f"unknown ablation {unknown[0]!r}: choose from "
                               f"{', '.join(ABLATIONS)}")
        return {name: ABLATIONS[name] for name in dict.fromkeys(opts.only)}
    return dict(ABLATIONS) if opts.ablations else {"": {}}


def _settings_summary(qa: Any, threshold: float | None) -> dict[str, Any]:
    s = qa.settings
    keys = ("retrieval", "reranker", "rerank_sentences", "extractor", "candidates",
            "context_weight", "embedding_model", "window_chars", "threads")
    summary = {k: str(getattr(s, k)) if isinstance(getattr(s, k), Path) else getattr(s, k)
               for k in keys}
    return {**summary, "abstain_threshold": threshold}


def _check_server_corpus(target: HttpTarget, dataset: Dataset) -> None:
    import hashlib

    import httpx

    try:
        served = httpx.get(f"{target.url}/documents", timeout=30).json()["documents"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot list the server's documents at {target.url}: {exc}") from None
    have = {d["file"]: d["sha256"] for d in served}
    missing = [n for n, t in dataset.corpus.items()
               if have.get(n) != hashlib.sha256(t.encode()).hexdigest()]
    if missing:
        raise DatasetError(
            f"the server at {target.url} does not serve this dataset's corpus "
            f"({len(missing)} of {len(dataset.corpus)} files missing or different, e.g. "
            f"{missing[0]}). Start it with: citeqa serve --docs {dataset.docs_dir}")


def run_eval(opts: EvalOptions, echo: Callable[[str], None] = print,
             progress_factory: Callable[[str, int], Any] | None = None) -> list[dict[str, Any]]:
    """Run every dataset (and every ablation) and print the reports; returns them."""
    if opts.sweep and opts.url:
        raise DatasetError("--sweep runs in-process (it needs every answer's score); drop --url")
    configs = select_ablations(opts)
    datasets = prepare_datasets(opts)
    reports: list[dict[str, Any]] = []
    sweep_pool: list[QuestionResult] = []
    side_by_side = "" not in configs  # named ablations: one table with a column each
    for ds in datasets:
        checker = CitationChecker(ds.corpus)
        columns: dict[str, dict[str, Any]] = {}
        for label, ablation in configs.items():
            if opts.url:
                target: Target = HttpTarget(opts.url)
                _check_server_corpus(target, ds)
                threshold, settings = None, {"url": opts.url}
            else:
                qa, threshold = in_process_qa(ds, {**opts.overrides, **ablation})
                target, settings = InProcessTarget(qa), _settings_summary(qa, threshold)
            bar = progress_factory(f"{ds.name} {label}".strip(), len(ds.questions)) \
                if progress_factory else None
            results = run_questions(target, ds.questions,
                                    progress=(lambda i, n: bar.update(1)) if bar else None)
            if bar:
                bar.close()
            report = build_report(ds.name, results, checker, threshold,
                                  {**settings, "mode": target.description})
            if label:
                report["ablation"] = label
                columns[label] = report["metrics"]
            reports.append(report)
            if opts.dump:
                dump_results(results, opts.dump, report["dataset"], append=len(reports) > 1,
                             ablation=label or None)
            if not label or label == "hybrid+rerank":
                sweep_pool.extend(results)
            if not side_by_side:
                echo(render(report))
        if side_by_side:
            echo(f"## {ds.name}: ablations ({len(ds.questions)} questions)\n")
            echo(markdown_table(columns))
    if opts.sweep:
        table, best = sweep(sweep_pool, max_false_abstain=opts.max_false_abstain)
        _, unconstrained = sweep(sweep_pool)
        echo("\n## Abstention threshold sweep (pooled over the datasets above)\n")
        echo("| threshold | abstain_acc | false_abstain | balanced_acc |\n|---|---|---|---|")
        for row in table:
            echo(f"| {row['threshold']:g} | {row['abstain_acc']:.3f} | {row['false_abstain']:.3f}"
                 f" | {row['balanced_acc']:.3f} |")
        for label, row in ((f"best threshold with false abstention <= "
                            f"{opts.max_false_abstain:.0%}", best),
                           ("best threshold without that cap", unconstrained)):
            echo(f"\n{label}: {row['threshold']:g} (balanced accuracy {row['balanced_acc']:.3f}: "
                 f"abstains on {row['abstain_acc']:.1%} of unanswerable, falsely on "
                 f"{row['false_abstain']:.1%} of answerable)")
        for r in reports:
            r["sweep"] = {"table": table, "best": best, "best_unconstrained": unconstrained,
                          "max_false_abstain": opts.max_false_abstain}
    if opts.compare:
        old = json.loads(Path(opts.compare).read_text(encoding="utf-8"))
        old_reports = old if isinstance(old, list) else [old]
        for new in reports:
            match = next((o for o in old_reports if o.get("dataset") == new["dataset"]
                          and o.get("ablation") == new.get("ablation")), None)
            if match:
                echo("\n" + render_comparison(new, match))
            else:
                echo(f"\n(no report for {new['dataset']} in {opts.compare} to compare with)")
    if opts.json_path:
        payload = reports[0] if len(reports) == 1 else reports
        Path(opts.json_path).write_text(dumps(payload) + "\n", encoding="utf-8")
    return reports


def _index_dir_for(ds: Dataset, settings: Any) -> Path:
    """The dataset's cached index for these index settings (the settings an index's manifest
    records, ``IndexConfig``): one folder per combination, so evaluating another embedding
    model (or window) builds its own index once and never clashes with, or rebuilds, the
    default one."""
    import hashlib
    from dataclasses import fields

    from citeqa.index.corpus import IndexConfig

    recorded = [f.name for f in fields(IndexConfig) if f.name in type(settings).model_fields]
    values = json.dumps([str(getattr(settings, k)) for k in recorded])
    return ds.index_dir.with_name(
        f"{ds.index_dir.name}-{hashlib.sha256(values.encode()).hexdigest()[:12]}")


def in_process_qa(ds: Dataset, overrides: dict[str, Any]):
    """A started QA over the dataset's cached index for these settings, answering every
    question (no abstention cut), and the threshold the settings ask for."""
    from citeqa.service.pipeline import QA
    from citeqa.service.settings import Settings

    settings = Settings(**{**overrides, "docs_dir": ds.docs_dir})
    settings = settings.model_copy(update={"index_dir": _index_dir_for(ds, settings)})
    # Every answer comes back (threshold -1) and the configured threshold is applied when
    # scoring: identical results, and the sweep can try other thresholds for free.
    qa = QA(settings.model_copy(update={"abstain_threshold": -1.0}))
    threshold = resolve_threshold(settings.abstain_threshold, qa.calibrated_threshold)
    qa.start()
    return qa, threshold
