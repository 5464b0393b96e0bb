"""The ``citeqa`` command line: index, ask, search, eval and their errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from citeqa.cli import app

from tests.conftest import copy_index

runner = CliRunner()


def test_index_ask_search(cli_env, docs_copy) -> None:
    idx = str(cli_env / "idx")
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", idx])
    assert r.exit_code == 0, r.output
    assert "indexed 3 files" in r.output and "3 added" in r.output
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", idx])
    assert "3 unchanged" in r.output

    r = runner.invoke(app, ["ask", "what did Esper say about the impact on operations in Syria?",
                            "--docs", str(docs_copy), "--index-dir", idx, "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout[r.stdout.index("{"):])
    assert body["answers"][0]["citation"]["paragraph"] == 14

    r = runner.invoke(app, ["ask", "what is the tallest mountain in Europe?",
                            "--docs", str(docs_copy), "--index-dir", idx])
    assert r.exit_code == 0 and "No answer in these articles." in r.output

    r = runner.invoke(app, ["search", "Kurdish fighters", "--top-k", "2",
                            "--docs", str(docs_copy), "--index-dir", idx])
    assert r.exit_code == 0 and r.output.count("¶") == 2


def test_cli_errors_are_messages_not_tracebacks(cli_env, docs_copy) -> None:
    r = runner.invoke(app, ["index", str(cli_env / "missing")])
    assert r.exit_code != 0 and "not a directory" in r.output
    r = runner.invoke(app, ["ask", "   ", "--docs", str(docs_copy), "--index-dir", str(cli_env / "i")])
    assert r.exit_code != 0 and "empty or whitespace" in r.output
    r = runner.invoke(app, ["ask", "ok?", "--top-k", "0", "--docs", str(docs_copy),
                            "--index-dir", str(cli_env / "i")])
    assert r.exit_code != 0 and "top_k" in r.output
    r = runner.invoke(app, ["eval", "--squad", str(cli_env / "nope.json")])
    assert r.exit_code != 0 and "not found" in r.output
    r = runner.invoke(app, ["eval", "--sweep", "--url", "http://127.0.0.1:9"])
    assert r.exit_code != 0 and "in-process" in r.output
    r = runner.invoke(app, ["eval", "--ablation", "rerank"])
    assert r.exit_code != 0 and "unknown ablation 'rerank'" in r.output
    for result in (r,):
        assert "Traceback" not in result.output


def test_index_reports_skipped_files_and_exits_nonzero(cli_env, docs_copy, bundled_index) -> None:
    idx = copy_index(bundled_index, cli_env / "idx")  # the 3 good files are indexed already
    (docs_copy / "broken.txt").write_bytes(b"\xff\xfe\x00bad")
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", str(idx)])
    assert r.exit_code == 1
    assert "broken.txt" in r.output and "indexed 3 files" in r.output


def test_index_built_with_another_model_fails_clearly(cli_env, docs_copy, bundled_index) -> None:
    idx = copy_index(bundled_index, cli_env / "idx")
    generation = idx / (idx / "CURRENT").read_text().strip()
    manifest = json.loads((generation / "manifest.json").read_text())
    manifest.update(embedding_model="sentence-transformers/all-mpnet-base-v2", dim=768)
    (generation / "manifest.json").write_text(json.dumps(manifest))
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", str(idx)])
    assert r.exit_code == 2 and "all-mpnet-base-v2" in r.output and "--rebuild" in r.output
    r = runner.invoke(app, ["ask", "who is Esper?", "--docs", str(docs_copy), "--index-dir", str(idx)])
    assert r.exit_code == 2 and "--rebuild" in r.output
    r = runner.invoke(app, ["index", str(docs_copy), "--index-dir", str(idx), "--rebuild"])
    assert r.exit_code == 0 and "3 added" in r.output, r.output


def test_a_broken_reader_abstention_file_is_a_message(cli_env, docs_copy, monkeypatch) -> None:
    from tests.conftest import link_reader

    reader = link_reader(cli_env / "reader")
    (reader / "abstention.json").write_text('{"rerank": "x"}', encoding="utf-8")
    monkeypatch.setenv("CITEQA_EXTRACTOR", "reader")
    monkeypatch.setenv("CITEQA_READER_ABSTENTION", "fitted")
    monkeypatch.setenv("CITEQA_READER_PATH", str(reader))
    r = runner.invoke(app, ["ask", "who is the chairman of the Joint Chiefs of Staff?",
                            "--docs", str(docs_copy), "--index-dir", str(cli_env / "i")])
    assert r.exit_code == 2 and "not an abstention model" in r.output
    assert "Traceback" not in r.output
