#!/usr/bin/env bash
# make check-install: the install users run, smoke-tested. `scripts/install.sh VENV` without extras
# (exactly the Dockerfile's step, and what `pip install citeqa` gives) into a fresh temporary venv,
# then, from an unrelated directory: `citeqa index`, `citeqa ask --json` (twice, both times
# reported), a check that answering loads no torch (the default embedder is shipped as INT8
# ONNX), and a short
# `citeqa serve` answering /ready and one /ask. Python warnings are errors throughout, so a
# silent fallback (say, the ONNX export failing for a missing runtime dependency) fails the check.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/citeqa-check-install.XXXXXX")
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check-install FAILED: %s\n' "$*" >&2; exit 1; }

step "install without extras into $work/venv"
t0=$(date +%s)
bash "$repo/scripts/install.sh" "$work/venv"
echo "install: $(( $(date +%s) - t0 )) s"
bin="$work/venv/bin"
"$bin/python" -c "import pytest" 2>/dev/null && fail "a dev-only package (pytest) is installed"

export PYTHONWARNINGS=error CITEQA_DATA_DIR="$work/data" HF_HUB_OFFLINE=1
unset CITEQA_DOCS_DIR CITEQA_INDEX_DIR CITEQA_EMBEDDING_BACKEND CITEQA_EXTRACTOR || true
mkdir "$work/elsewhere" && cd "$work/elsewhere"
question="why was the counter-ISIS campaign paused?"

step "citeqa index (the bundled articles, from the installed package)"
corpus=$("$bin/python" -c "from citeqa.service.settings import BUNDLED_CORPUS; print(BUNDLED_CORPUS)")
"$bin/citeqa" index "$corpus" 2>"$work/index.err" || { cat "$work/index.err"; fail "citeqa index"; }
grep -i "warning\|failed\|traceback" "$work/index.err" && fail "citeqa index printed a warning"

check_answer() {  # the JSON answer cites its file exactly
  "$bin/python" - "$1" "$corpus" <<'PY'
import json, sys
from pathlib import Path
body = json.loads(Path(sys.argv[1]).read_text())
assert not body["no_answer"], body
a = body["answers"][0]
c = a["citation"]
text = (Path(sys.argv[2]) / c["file"]).read_text(encoding="utf-8")
assert text[c["start"]:c["end"]] == a["text"], (c, a["text"])
print(f"answer: {a['text'][:80]!r} [{c['file']} ¶{c['paragraph']}]")
PY
}

for run in first second; do
  step "citeqa ask --json ($run start)"
  t0=$(date +%s%N)
  "$bin/citeqa" ask "$question" --json >"$work/ask.json" 2>"$work/ask.err" \
    || { cat "$work/ask.err"; fail "citeqa ask"; }
  t1=$(date +%s%N)
  grep -i "warning\|failed\|traceback" "$work/ask.err" && fail "citeqa ask printed a warning"
  check_answer "$work/ask.json"
  ms=$(( (t1 - t0) / 1000000 ))
  printf 'citeqa ask, %s start: %d.%02d s\n' "$run" $(( ms / 1000 )) $(( ms % 1000 / 10 ))
done
# The same cached start from the development install (make install), when there is one: the
# two start times side by side (figures only; timing is not asserted).
if [ -x "$repo/.venv/bin/citeqa" ]; then
  for venv in "$work/venv" "$repo/.venv" "$work/venv" "$repo/.venv"; do
    t0=$(date +%s%N)
    "$venv/bin/citeqa" ask "$question" --json >/dev/null 2>&1 || fail "citeqa ask in $venv"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf 'cached start, %s: %d ms\n' "$([ "$venv" = "$work/venv" ] && echo plain || echo dev)" "$ms"
  done
fi
"$bin/python" - "$question" <<'PY' || fail "answering on the existing index loaded torch"
import sys
from citeqa import QA
with QA() as qa:  # the default settings: the index citeqa index built above
    qa.start()
    assert qa.settings.embedding_model == "citeqa-retriever", qa.settings.embedding_model
    assert qa.ask(sys.argv[1]).answers
loaded = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
assert not loaded, f"loaded {loaded}"
print("the default embedder (citeqa-retriever, shipped INT8 ONNX) answers without torch")
PY

step "citeqa serve on 127.0.0.1, /ready and one /ask"
port=$("$bin/python" -c "import socket
with socket.socket() as s: s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$bin/citeqa" serve --port "$port" >"$work/serve.log" 2>&1 &
server=$!
"$bin/python" - "$port" "$question" <<'PY' || { cat "$work/serve.log"; fail "citeqa serve"; }
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("not ready after 120 s")
        time.sleep(0.5)
req = urllib.request.Request(f"{url}/ask", data=json.dumps({"question": sys.argv[2]}).encode(),
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=60) as r:
    body = json.loads(r.read())
assert r.status == 200 and not body["no_answer"], body
print(f"/ask over HTTP: {body['answers'][0]['text'][:80]!r}")
PY
grep -i "warning\|traceback" "$work/serve.log" && fail "citeqa serve printed a warning"
echo
echo "check-install passed"
