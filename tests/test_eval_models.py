"""scripts/eval_models.py: the side-by-side table is built from report dicts alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # as when run: scripts/ first on the path

import eval_models  # noqa: E402


def _report(hit: float, n: int = 555, abstain: float | None = None) -> dict:
    return {"dataset": "SQuAD 1.0 new_wiki_v1.0.json, first 4 articles", "n": n,
            "metrics": {"recall@5": 0.9658, "evidence_hit@1": hit, "f1": 0.1732,
                        "abstain_acc": abstain, "false_abstain": 0.0396,
                        "latency_p50_ms": 122.2}}


def _runs() -> list[dict]:
    return [
        {"row": "defaults", "set": "new_wiki", "status": "ok", "report": _report(0.8901)},
        {"row": "bi-encoder", "set": "new_wiki", "status": "ok", "report": _report(0.9251)},
        {"row": "cross-encoder", "set": "new_wiki", "status": "not available",
         "reason": "no cross-encoder (model.onnx) in models/reranker_answer"},
        {"row": "both", "set": "new_wiki", "status": "failed", "reason": "exit 1: boom"},
        {"row": "defaults", "set": "own", "status": "ok", "report": _report(0.84, 98, 0.7059)},
    ]


def _table_rows(md: str, set_name: str) -> dict[str, list[str]]:
    section = md.split(f"## {set_name}:", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| row ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_table_values_delta_and_missing_rows():
    md = eval_models.build_markdown(_runs(), {"generated": "2026-01-01 00:00"})
    assert "machine's load" in md  # the latency caveat is in the header
    wiki = _table_rows(md, "new_wiki")
    # recall@5, hit@1, delta, F1, abstention, false abstention, p50, n
    assert wiki["defaults"] == ["0.966", "0.890", "–", "0.173", "–", "0.040", "122", "555"]
    assert wiki["bi-encoder"][2] == "+3.5"
    assert wiki["cross-encoder"][0].startswith("**not available**: no cross-encoder")
    assert wiki["both"][0].startswith("**failed**")
    assert "(555 questions)" in md
    own = _table_rows(md, "own")
    assert own["defaults"][4] == "0.706" and own["defaults"][-1] == "98"
    assert md.index("## new_wiki:") < md.index("## own:")  # sets in first-seen order


def test_no_defaults_row_means_no_delta():
    runs = [r for r in _runs() if r["row"] == "bi-encoder"]
    assert _table_rows(eval_models.build_markdown(runs), "new_wiki")["bi-encoder"][2] == "–"


def test_delta_per_extractor():
    runs = [{"row": row, "set": "own", "status": "ok", "extractor": ext, "report": _report(hit)}
            for row, ext, hit in (("defaults", "sentence", 0.84), ("defaults", "reader", 0.74),
                                  ("both", "sentence", 0.90), ("both", "reader", 0.90))]
    rows = _table_rows(eval_models.build_markdown(runs), "own")
    assert rows["both · sentence"][2] == "+6.0" and rows["both · reader"][2] == "+16.0"


def test_from_json_rebuilds_the_same_table(tmp_path):
    runs = _runs()
    combined = tmp_path / "eval-models.json"
    combined.write_text(json.dumps({"meta": {}, "runs": runs}))
    raw = tmp_path / "report.json"
    raw.write_text(json.dumps(_report(0.5)))
    out = tmp_path / "out.json"
    assert eval_models.main(["--from-json", str(combined), f"x:own={raw}",
                             "--json", str(out)]) == 0
    md = (tmp_path / "out.md").read_text()
    assert _table_rows(md, "new_wiki")["bi-encoder"][2] == "+3.5"
    assert _table_rows(md, "own")["x"][1] == "0.500"
    assert len(json.loads(out.read_text())["runs"]) == len(runs) + 1


def test_from_json_keeps_every_files_row_settings(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"meta": {"rows": {"defaults": {"env": {"A": "1"}}}},
                                 "runs": _runs()[:1]}))
    second.write_text(json.dumps({"meta": {"rows": {"both": {"env": {"B": "2"}}}},
                                  "runs": [{"row": "both", "set": "new_wiki", "status": "ok",
                                            "report": _report(0.95)}]}))
    out = tmp_path / "out.json"
    assert eval_models.main(["--from-json", str(first), str(second), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["meta"]["rows"]
    assert rows == {"defaults": {"env": {"A": "1"}}, "both": {"env": {"B": "2"}}}
    md = (tmp_path / "out.md").read_text()
    assert "`both`: B=2" in md and "`defaults`: A=1" in md


def test_from_json_lists_every_files_date_and_command(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"meta": {"generated": "2026-01-01 10:00", "command": "run A"},
                                 "runs": _runs()[:1]}))
    second.write_text(json.dumps({"meta": {"generated": "2026-02-02 20:00", "command": "run B"},
                                  "runs": _runs()[1:2]}))
    out = tmp_path / "out.json"
    assert eval_models.main(["--from-json", str(first), str(second), "--json", str(out)]) == 0
    md = (tmp_path / "out.md").read_text()
    assert f"{first}: generated 2026-01-01 10:00 by `run A`" in md
    assert f"{second}: generated 2026-02-02 20:00 by `run B`" in md
    assert "Generated 2026-01-01" not in md  # no single date stands for a merged table
    # Rebuilding from the rebuilt file keeps the original sources, not the merged file's name.
    again = tmp_path / "again.json"
    assert eval_models.main(["--from-json", str(out), "--json", str(again)]) == 0
    assert json.loads(again.read_text())["meta"]["sources"] == json.loads(
        out.read_text())["meta"]["sources"]
