"""citeqa as other apps install it: a wheel built with ``pip wheel --no-deps .`` and installed
(not editable) into a fresh virtualenv, used from an unrelated directory.

The fresh venv borrows the dev venv's dependencies through a ``.pth`` file (so torch is not
installed again); citeqa itself, its bundled articles and its models come from the wheel alone.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, copy_index, link_model_cache, running_server

QUESTION = "why was the counter-ISIS campaign paused?"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(REPO)], check=True, cwd=out, timeout=300)
    (path,) = out.glob("citeqa-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory, bundled_index, model_cache):
    """(venv, environment, working directory): the wheel in a fresh venv, and a data folder
    holding the bundled index and the question embedder's export (so the test does not spend
    its time re-embedding what other tests already cover)."""
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The dev venv's packages (not its editable citeqa: .pth files there are not processed).
    Path(purelib, "_citeqa_test_deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    data = link_model_cache(base / "data", model_cache)
    copy_index(bundled_index, data / "index")
    work = base / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CITEQA_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(CITEQA_DATA_DIR=str(data), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return venv, env, work


def _run(installed, *args: str) -> subprocess.CompletedProcess:
    venv, env, work = installed
    return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_installs_only_the_citeqa_namespace(wheel) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"citeqa", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    # The bundled articles and the shipped models are package data; training code is not.
    assert {f"citeqa/corpus/{p.name}" for p in (REPO / "corpus").glob("*.txt")} <= set(names)
    for model in ("reader", "reranker"):
        assert f"citeqa/models/{model}/model.onnx" in names
        assert f"citeqa/models/{model}/tokenizer.json" in names
    assert "citeqa/eval/questions.jsonl" in names and "citeqa/py.typed" in names
    assert not any("training" in n or "squad_data" in n or "/work/" in n for n in names)
    assert "citeqa/service/cli.py" in names and "citeqa/cli.py" in names
    assert "citeqa/service/web/index.html" in names and "citeqa/service/web/app.js" in names


def test_installed_citeqa_answers_from_another_directory(installed) -> None:
    venv, _, work = installed
    r = _run(installed, "python", "-c",
             "import citeqa, sys; from citeqa import QA, CiteQAError; "
             "from citeqa.service.settings import BUNDLED_CORPUS; "
             "print(citeqa.__file__); print(BUNDLED_CORPUS); "
             "import importlib.util as u; print([m for m in ('service', 'index', 'eval') "
             "if u.find_spec(m)])")
    assert r.returncode == 0, r.stderr
    module, corpus, old_names = r.stdout.splitlines()
    assert Path(module).is_relative_to(venv) and Path(corpus).is_relative_to(venv)
    assert old_names == "[]"  # no generic top-level names installed

    r = _run(installed, "citeqa", "ask", QUESTION, "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert not body["no_answer"]
    c = body["answers"][0]["citation"]
    text = (Path(corpus) / c["file"]).read_text(encoding="utf-8")
    assert text[c["start"]:c["end"]] == body["answers"][0]["text"]


def test_installed_citeqa_serves(installed) -> None:
    venv, env, work = installed
    with running_server([], env, work / "serve.log", cwd=work,
                        command=str(venv / "bin" / "citeqa")) as (url, _):
        r = httpx.post(f"{url}/ask", json={"question": QUESTION}, timeout=60)
        assert r.status_code == 200 and not r.json()["no_answer"]
        page = httpx.get(f"{url}/", timeout=30)  # the web page, from the wheel's package data
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
