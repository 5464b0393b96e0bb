#!/usr/bin/env python
"""Does the reader's no-answer score help decide *whether* to answer, next to the cross-encoder?

For every question of each set, the default pipeline with the reader extractor runs and this
records, for the top answer:

- ``rerank``: the cross-encoder logit of the answer sentence (what the service thresholds today);
- ``reader_window``: the reader's span score minus its null score on the window the service
  reads (the answer with the sentence before it);
- ``reader_paragraph``: the same on the answer's whole paragraph (the reader's training view;
  one more window per question, not read by the service).

A logistic regression of "answerable" on each feature set is fitted on the tuning sets (the 4
SQuAD dev articles of ``split.json`` and our question set, as the abstention threshold is), the
threshold is the one with at most ``--max-false-abstain`` false abstention there, and the
held-out set (4 SQuAD *test* articles) reports ROC AUC and abstention at that threshold.
Questions with no candidate answer abstain whatever the features say.

``--write DIR`` saves the "rerank + reader window" model, the one the service can use at no
extra cost (both signals are computed anyway), as ``DIR/abstention.json``
(``citeqa.service.abstention``):

    python scripts/reader_abstention.py --json docs/results/reader-abstention.json --write models/reader
"""

from __future__ import annotations

import _env  # noqa: F401  (thread pools pinned before numpy and onnxruntime start)

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _env import REPO
from citeqa import QA, Settings
from citeqa.eval.app import EvalOptions, prepare_datasets
from citeqa.index.documents import file_sha256
from citeqa.service.abstention import AbstentionModel, reader_margin
from citeqa.service.reader.onnx_reader import OnnxReader
from training.abstention_fit import fit_logistic, save_model
from training.squad_data import load_split

FEATURES = ("rerank", "reader_window", "reader_paragraph")
FEATURE_SETS = {
    "rerank (today)": ("rerank",),
    "reader window": ("reader_window",),
    "reader paragraph": ("reader_paragraph",),
    "rerank + reader window": ("rerank", "reader_window"),
    "rerank + reader paragraph": ("rerank", "reader_paragraph"),
    "all three": FEATURES,
}
SHIPPED = "rerank + reader window"
# The held-out check: four of split.json's test articles, the ones `make eval-extractors` uses.
TEST_TITLES = ["Amazon_rainforest", "Black_Death", "Pharmacy", "Jacksonville,_Florida"]


@dataclass
class Row:
    answerable: bool
    features: dict[str, float] | None  # None: no candidate answer at all


def collect(squad: Path | None, titles: list[str] | None, work_dir: Path,
            overrides: dict) -> list[Row]:
    ds = prepare_datasets(EvalOptions(squad=squad, titles=titles, work_dir=work_dir))[0]
    print(f"{ds.name}: {len(ds.questions)} questions", file=sys.stderr, flush=True)
    qa = QA(Settings(**{**overrides, "docs_dir": ds.docs_dir, "index_dir": ds.index_dir,
                        "extractor": "reader"}))
    qa.start()
    # The same reader the extractor uses, for the whole-paragraph feature it does not compute.
    reader = OnnxReader(qa.settings.reader_path, threads=qa.settings.threads)
    rows = []
    for q in ds.questions:
        candidates = qa.candidates(q.question)
        if not candidates:
            rows.append(Row(q.answerable, None))
            continue
        top = candidates[0]
        para = qa.paragraph(top.file, top.paragraph)
        whole = reader.read(q.question, [para.text], top_n=1)[0]
        rows.append(Row(q.answerable, {
            "rerank": top.logit,
            "reader_window": top.reader_margin,
            "reader_paragraph": reader_margin(whole.best_span_score, whole.null_score),
        }))
    qa.close()
    reader.close()
    return rows


def matrix(rows: list[Row], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    has = np.array([r.features is not None for r in rows])
    x = np.array([[r.features[n] for n in names] if r.features else [0.0] * len(names)
                  for r in rows], dtype=np.float64)
    y = np.array([r.answerable for r in rows], dtype=np.float64)
    return x, y, has


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    pos, neg = scores[y == 1], scores[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def rates(scores: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    """(abstention on unanswerable, false abstention on answerable) at ``threshold``."""
    abstain = scores < threshold
    return float(abstain[y == 0].mean()), float(abstain[y == 1].mean())


def pick_threshold(scores: np.ndarray, y: np.ndarray, cap: float) -> float:
    """The highest threshold whose false abstention stays within ``cap``."""
    best = -np.inf
    for t in np.unique(scores):
        if rates(scores, y, t)[1] <= cap:
            best = max(best, float(t))
    return best


def evaluate(tune: list[Row], held: dict[str, list[Row]], cap: float) -> list[dict]:
    out = []
    for label, names in FEATURE_SETS.items():
        x, y, has = matrix(tune, names)
        w = fit_logistic(x[has], y[has])

        def score(rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
            x, y, has = matrix(rows, names)
            s = np.hstack([x, np.ones((len(x), 1))]) @ w
            return np.where(has, s, -np.inf), y

        s_tune, y_tune = score(tune)
        threshold = pick_threshold(s_tune, y_tune, cap)
        row = {"features": label, "weights": dict(zip(names + ("bias",), map(float, w))),
               "threshold": threshold, "tune_auc": auc(s_tune, y_tune),
               "tune_abstain": rates(s_tune, y_tune, threshold)[0]}
        for name, rows in held.items():
            s, y = score(rows)
            ab, fa = rates(s, y, threshold)
            row[name] = {"auc": auc(s, y), "abstain": ab, "false_abstain": fa}
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squad-dir", type=Path, default=REPO.parent / "shared" / "benchmarks" / "squad")
    p.add_argument("--work-dir", type=Path, default=Path(".eval"))
    p.add_argument("--reader-path", type=Path, default=None, help="reader model folder (default: shipped)")
    p.add_argument("--max-false-abstain", type=float, default=0.05)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write", type=Path, default=None, metavar="DIR",
                   help=f"save the '{SHIPPED}' model as DIR/abstention.json")
    args = p.parse_args(argv)
    squad = args.squad_dir / "dev-v2.0.json"
    if not squad.is_file():
        p.error(f"{squad} not found: pass --squad-dir")
    overrides = {"reader_path": args.reader_path} if args.reader_path else {}
    split = load_split(args.squad_dir)
    if not set(TEST_TITLES) <= set(split.test):
        p.error(f"{args.squad_dir / 'split.json'} no longer has {TEST_TITLES} among its test articles")
    dev = collect(squad, split.dev, args.work_dir, overrides)
    own = collect(None, None, args.work_dir, overrides)
    test = collect(squad, TEST_TITLES, args.work_dir, overrides)
    results = evaluate(dev + own, {"test4": test, "own": own}, args.max_false_abstain)
    print(f"\nfitted on 4 SQuAD dev articles + our set ({len(dev) + len(own)} questions); threshold "
          f"at <= {args.max_false_abstain:.0%} false abstention there\n")
    print("| features | weights (logit units) | AUC tune | AUC test4 | test4 abstain / false | "
          "our set abstain / false |\n|---|---|---|---|---|---|")
    for r in results:
        w = ", ".join(f"{k} {v:+.3f}" for k, v in r["weights"].items())
        t, o = r["test4"], r["own"]
        print(f"| {r['features']} | {w} | {r['tune_auc']:.3f} | {t['auc']:.3f} | "
              f"{t['abstain']:.3f} / {t['false_abstain']:.3f} | {o['abstain']:.3f} / "
              f"{o['false_abstain']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"max_false_abstain": args.max_false_abstain,
                                         "results": results}, indent=2) + "\n")
    if args.write:
        r = next(r for r in results if r["features"] == SHIPPED)
        model = AbstentionModel(
            rerank=r["weights"]["rerank"], reader=r["weights"]["reader_window"],
            bias=r["weights"]["bias"], threshold=float(1 / (1 + np.exp(-r["threshold"]))),
            fitted_on=f"4 SQuAD v2.0 dev articles of split.json ({len(dev)} questions) + our set "
                      f"({len(own)}); threshold at <= {args.max_false_abstain:.0%} false abstention there",
            metrics={"tune_auc": round(r["tune_auc"], 4),
                     "test4": {k: round(v, 4) for k, v in r["test4"].items()}},
            reader_sha256=file_sha256((args.reader_path or Settings().reader_path)
                                      / "model.onnx"))
        print(f"wrote {save_model(model, args.write)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
