"""Crash and load tests that take minutes (`make stress`); the fast damage tests are in
tests/test_crash_recovery.py (`make test`).

Phases (all on 127.0.0.1, each bounded in count and time; a failed check exits 1):

- ``crash-index``: ``citeqa index DIR --index-dir X`` SIGKILLed at random points, 20 times.
  DIR holds SQuAD v1.1 dev articles, one .txt per article (``--paragraphs`` first paragraphs
  of each: whole articles take ~13 s each to embed on one busy core). An uncut run indexes the
  base state (3 articles); then each round resets DIR to the last committed state and makes one
  change (add an article, change a file, remove one), starts ``citeqa index`` and SIGKILLs it
  after a delay drawn uniformly from [1, 1.15 x the median uncut run of that kind] s (the
  first run of each kind is uncut and sets it; runs take ~2-30 s here, as the shared machine's
  load varies: model load ~1.5-5 s, embedding, lexical rebuild, save), so kills land in the
  load, the embedding and the save, and some runs finish first (not counted as kills; they
  must exit 0 with the new state). After each kill the index must load
  and equal either the committed state or the new one, complete: every file of the manifest
  with all its paragraphs, passages and sentences, each unit's text the file's own
  ``text[start:end]``, counts consistent. A final uncut run must complete with all files.
- ``crash-upload``: ``citeqa serve`` SIGKILLed during a ``POST /documents`` (a SQuAD article),
  at a delay drawn from [0, 1.2 x the measured time of an uncut upload]; after a restart the
  upload is fully indexed or absent, and ``uploads/`` and the index agree file by file.
- ``load``: 32 concurrent clients (asyncio + httpx) asking questions from eval/questions.jsonl
  for 60 s against ``citeqa serve`` on the bundled corpus: zero 5xx, zero dropped connections;
  p50/p95/p99 and requests/s. Then ``overload``: ``CITEQA_MAX_QUEUE=4``, 32 clients for 20 s
  (a 503 client waits 0.2 s, then asks again): fast 503s with Retry-After, the 200s' latency
  bounded, and normal service right after.

    python scripts/stress.py [--phase crash-index --phase load ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "citeqa"
SQUAD = REPO.parent / "shared" / "benchmarks" / "squad" / "dev-v1.1.json"
KEY = "stress-key"

from citeqa.eval.metrics import percentile  # noqa: E402
from citeqa.eval.runner import wait_until_ready  # noqa: E402
from citeqa.index.corpus import CorpusIndex  # noqa: E402


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CITEQA_DATA_DIR": str(data_dir), "CITEQA_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def squad_articles(paragraphs: int) -> list[tuple[str, list[str]]]:
    """(file name, paragraphs) of every SQuAD v1.1 dev article, smallest first."""
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"]
    articles = []
    for i, a in enumerate(data):
        paras = [p["context"].strip() for p in a["paragraphs"]]
        name = f"{i:02d}_{a['title'][:60]}.txt".replace(",", "").replace("(", "").replace(")", "")
        articles.append((name, paras))
    articles.sort(key=lambda a: sum(map(len, a[1])))
    return [(name, paras[:paragraphs] if paragraphs else paras) for name, paras in articles]


def _text(paras: list[str]) -> str:
    return "\n\n".join(" ".join(p.split()) for p in paras) + "\n"


# -- crash-index ------------------------------------------------------------------------------

def check_index_state(idx: Path, states: dict[str, dict[str, str]],
                      texts: dict[str, str]) -> str:
    """Load the index; it must be one of ``states`` (name -> {file: sha256}) and complete.
    ``texts``: every file version seen, by sha256. Returns the matching state's name."""
    index = CorpusIndex.load(idx)  # raises on any damage
    found = {name: info.sha256 for name, info in index.files.items()}
    match = [name for name, state in states.items() if state == found]
    check(bool(match), f"index holds {sorted(found)}, neither state: "
          f"{ {k: sorted(v) for k, v in states.items()} }")
    manifest_gen = idx / (idx / "CURRENT").read_text(encoding="utf-8").strip()
    counts = json.loads((manifest_gen / "manifest.json").read_text(encoding="utf-8"))["counts"]
    check(counts == {"passages": len(index.passages), "sentences": len(index.sentences)},
          f"manifest counts {counts} vs stores")
    check(index.passage_lexical.size == len(index.passages)
          and index.sentence_lexical.size == len(index.sentences), "lexical sizes")
    for file, info in index.files.items():
        text = texts[info.sha256]
        paras = index.paragraphs.get(file, [])
        check(len(paras) == info.paragraphs and info.paragraphs == text.count("\n\n") + 1,
              f"{file}: {len(paras)} paragraphs, manifest {info.paragraphs}")
        for kind, store in (("passages", index.passages), ("sentences", index.sentences)):
            units = [u for u in store.units if u.file == file]
            check(bool(units), f"{file}: no {kind}")
            for u in units:
                check(text[u.start:u.end] == u.text, f"{file}: {kind} text differs at {u.start}")
        for p in paras:
            check(text[p.start:p.end] == p.text, f"{file}: paragraph {p.paragraph} differs")
    return match[0]


def crash_index(work: Path, kills: int, paragraphs: int, budget_s: float, seed: int) -> dict:
    rng = random.Random(seed)
    docs, idx, data = work / "docs", work / "index", work / "data"
    docs.mkdir()
    pool = squad_articles(paragraphs)
    texts: dict[str, str] = {}

    def put(name: str, text: str) -> None:
        (docs / name).write_text(text, encoding="utf-8")
        texts[_sha(text.encode("utf-8"))] = text

    def folder_state() -> dict[str, str]:
        return {p.name: _sha(p.read_bytes()) for p in docs.iterdir() if p.is_file()}

    def run_index(kill_after: float | None) -> tuple[bool, float, int | None]:
        started = time.monotonic()
        proc = subprocess.Popen([str(CLI), "index", str(docs), "--index-dir", str(idx)],
                                env=_env(data), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=kill_after if kill_after is not None else 600)
            return False, time.monotonic() - started, proc.returncode
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True, time.monotonic() - started, None

    unused = list(pool)
    base = [unused.pop(0) for _ in range(3)]
    for name, paras in base:
        put(name, _text(paras))
    killed, took, rc = run_index(None)
    check(rc == 0, f"base run exited {rc}")
    committed = folder_state()
    check_index_state(idx, {"committed": committed}, texts)
    log(f"crash-index: base state {len(committed)} files indexed in {took:.1f} s")
    deadline = time.monotonic() + budget_s
    rounds, done_kills, outcomes, ops = 0, 0, {"committed": 0, "new": 0}, []
    uncut: dict[str, list[float]] = {}
    finished_runs, leftovers_max = 0, 0
    while done_kills < kills:
        check(time.monotonic() < deadline, f"crash-index: only {done_kills} kills in {budget_s} s")
        rounds += 1
        # DIR back to the committed state, then one change
        for p in docs.iterdir():
            if p.name not in committed:
                p.unlink()
        for name, sha in committed.items():
            if not (docs / name).is_file() or _sha((docs / name).read_bytes()) != sha:
                put(name, texts[sha])
        op = ["add", "change", "remove", "add"][(rounds - 1) % 4] if unused else "change"
        if op == "remove" and len(committed) <= 2:
            op = "change"
        if op == "add":
            name, paras = unused[0]
            put(name, _text(paras))
        elif op == "change":
            name = rng.choice(sorted(committed))
            extra = rng.choice(pool)[1][-1]
            put(name, (docs / name).read_text(encoding="utf-8") + "\n" + extra + "\n")
        else:
            name = rng.choice(sorted(committed))
            (docs / name).unlink()
        target = folder_state()
        # The first round of each kind runs uncut; later ones are killed after a delay drawn
        # from [1, 1.15 x the median uncut run of that kind]: this machine's speed varies.
        known = uncut.get(op)
        window = max(2.0, 1.15 * statistics.median(known)) if known else None
        delay = rng.uniform(1.0, window) if window else None
        was_killed, took, rc = run_index(delay)
        if not was_killed:
            uncut.setdefault(op, []).append(took)
        which = check_index_state(idx, {"committed": committed, "new": target}, texts)
        leftovers = [p.name for p in idx.iterdir() if p.name.endswith(".tmp")]
        leftovers_max = max(leftovers_max, len(leftovers))
        if was_killed:
            done_kills += 1
            outcomes[which] += 1
        else:
            finished_runs += 1
            check(rc == 0 and which == "new", f"an uncut run exited {rc} with the {which} state")
        if which == "new":
            committed = target
            if op == "add":
                unused.pop(0)
        ops.append({"op": op, "delay_s": delay and round(delay, 2), "killed": was_killed,
                    "state": which, "s": round(took, 2)})
        log(f"crash-index round {rounds}: {op:6s} {'killed at' if was_killed else 'finished,'}"
            f" {took:4.1f} s -> {which} state ({done_kills}/{kills} kills)")
    # the final uncut run: DIR as the last round left it (its change may be uncommitted)
    want = folder_state()
    killed, took, rc = run_index(None)
    check(rc == 0, f"final run exited {rc}")
    check(check_index_state(idx, {"final": want}, texts) == "final", "final state")
    gens = [p.name for p in idx.iterdir() if p.name.startswith("gen-")]
    tmp = [p.name for p in idx.iterdir() if p.name.endswith(".tmp")]
    check(len(gens) == 1 and not tmp, f"after the final run: generations {gens}, leftovers {tmp}")
    log(f"crash-index: final run completed {len(want)} files in {took:.1f} s")
    return {"kills": done_kills, "rounds": rounds, "finished_runs": finished_runs,
            "after_kill": outcomes, "final_files": len(want), "final_run_s": round(took, 1),
            "max_leftover_tmp_between_runs": leftovers_max,
            "uncut_run_s_median": {op: round(statistics.median(v), 1) for op, v in uncut.items()},
            "kill_delay_s": "uniform [1, 1.15 x median uncut run of the same kind]",
            "paragraphs_per_article": paragraphs,
            "rounds_detail": ops}


# -- servers ----------------------------------------------------------------------------------

class Server:
    def __init__(self, work: Path, data: Path, index: Path, docs: Path | None, name: str,
                 **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(CLI), "serve", "--index-dir", str(index), "--port", str(self.port)]
        if docs is not None:
            args += ["--docs", str(docs)]
        self.log_path = work / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=_env(data, CITEQA_API_KEY=KEY, **env),
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def ready(self, timeout: float = 300) -> float:
        started = time.monotonic()
        try:
            wait_until_ready(self.url, timeout, alive=lambda: self.proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            raise CheckFailed(f"{exc}: {self.log_path.read_text(errors='replace')[-2000:]}")
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self._log.close()
        return rc


def crash_upload(work: Path, rounds: int, paragraphs: int, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    docs, idx, data = work / "docs", work / "index", work / "data"
    docs.mkdir()
    pool = squad_articles(paragraphs)
    (docs / pool[0][0]).write_text(_text(pool[0][1]), encoding="utf-8")
    uploads = idx / "uploads"
    results = []

    def upload(url: str, name: str, data_: bytes, box: dict) -> None:
        try:
            r = httpx.post(f"{url}/documents", files={"file": (name, data_, "text/plain")},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
            box["status"] = r.status_code
        except httpx.HTTPError as exc:
            box["error"] = type(exc).__name__

    def check_agree(server: Server, sent: dict[str, bytes]) -> dict[str, str]:
        listed = httpx.get(f"{server.url}/documents", timeout=30).json()["documents"]
        indexed = {d["file"]: d["sha256"] for d in listed if d["source"] == "upload"}
        on_disk = {p.name: _sha(p.read_bytes()) for p in uploads.iterdir()
                   if p.is_file() and not p.name.startswith(".")} if uploads.is_dir() else {}
        check(indexed == on_disk, f"uploads/ {sorted(on_disk)} vs index {sorted(indexed)}")
        for name, sha in indexed.items():
            check(sha == _sha(sent[name]), f"{name}: indexed content differs from the upload")
            first = sent[name].decode("utf-8").split("\n\n")[0]
            r = httpx.get(f"{server.url}/documents/{name}/paragraphs/1", timeout=30)
            check(r.status_code == 200 and r.json()["text"] == first, f"{name}: paragraph 1")
        return indexed

    import threading

    server = Server(work, data, idx, docs, "upload-server")
    log(f"crash-upload: server ready in {server.ready():.1f} s")
    sent: dict[str, bytes] = {}
    # calibration: one uncut upload, timed (and checked like the others)
    name, paras = pool[1]
    sent[name] = _text(paras).encode("utf-8")
    t0 = time.monotonic()
    box: dict = {}
    upload(server.url, name, sent[name], box)
    upload_s = time.monotonic() - t0
    check(box.get("status") == 201, f"calibration upload: {box}")
    check_agree(server, sent)
    log(f"crash-upload: an uncut upload takes {upload_s:.1f} s")
    for r in range(rounds):
        name, paras = pool[2 + r]
        sent[name] = _text(paras).encode("utf-8")
        delay = rng.uniform(0.0, 1.2 * upload_s)
        box = {}
        t = threading.Thread(target=upload, args=(server.url, name, sent[name], box))
        t.start()
        time.sleep(delay)
        acknowledged = box.get("status") == 201
        server.kill()
        t.join()
        acknowledged = acknowledged or box.get("status") == 201
        in_folder = (uploads / name).is_file()
        leftovers = [p.name for p in uploads.iterdir() if p.name.startswith(".")]
        server = Server(work, data, idx, docs, "upload-server")
        ready_s = server.ready()
        indexed = check_agree(server, sent)
        present = name in indexed
        if acknowledged:
            check(present, f"{name}: answered 201 before the kill but absent after restart")
        results.append({"delay_s": round(delay, 2), "acknowledged": acknowledged,
                        "file_in_uploads_at_kill": in_folder, "indexed_after_restart": present,
                        "tmp_left_in_uploads": leftovers, "restart_ready_s": round(ready_s, 1)})
        log(f"crash-upload round {r + 1}: killed after {delay:.2f} s "
            f"({'acknowledged' if acknowledged else 'no answer'}; in uploads/: {in_folder}) "
            f"-> after restart {'indexed' if present else 'absent'}, uploads/ and index agree")
    rc = server.stop()
    check(rc == 0, f"SIGTERM exit status {rc}")
    return {"rounds": results, "uncut_upload_s": round(upload_s, 1)}


# -- load ---------------------------------------------------------------------------------------

async def _clients(url: str, questions: list[str], n: int, seconds: float, seed: int,
                   wait_on_503: float = 0.2) -> dict:
    import httpx

    rng = random.Random(seed)
    records: list[tuple[int, float, str | None]] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while time.monotonic() < stop_at:
                q = rng.choice(questions)
                t0 = time.monotonic()
                try:
                    r = await c.post("/ask", json={"question": q})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                records.append((r.status_code, time.monotonic() - t0,
                                r.headers.get("retry-after")))
                if r.status_code == 503:
                    await asyncio.sleep(wait_on_503)

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(n)))
    elapsed = time.monotonic() - started
    ok = [s * 1000 for status, s, _ in records if status == 200]
    busy = [(s * 1000, ra) for status, s, ra in records if status == 503]
    statuses: dict[str, int] = {}
    for status, _, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def pct(values: list[float]) -> dict:
        if not values:
            return {}
        return {f"p{p}": round(percentile(values, p), 1) for p in (50, 95, 99)} | {
            "max": round(max(values), 1)}

    return {"clients": n, "seconds": round(elapsed, 1), "requests": len(records),
            "statuses": statuses, "dropped": errors, "ok_per_s": round(len(ok) / elapsed, 2),
            "ok_ms": pct(ok), "busy_ms": pct([b for b, _ in busy]),
            "busy_without_retry_after": sum(1 for _, ra in busy if not ra)}


def load(work: Path, clients: int, seconds: float, overload_seconds: float, seed: int) -> dict:
    import httpx

    questions = [json.loads(line)["question"]
                 for line in (REPO / "eval" / "questions.jsonl").read_text().splitlines() if line]
    data, idx = work / "data", work / "index"
    out: dict = {}
    server = Server(work, data, idx, None, "load-server")
    out["start_s"] = round(server.ready(), 1)
    try:
        # one sequential pass over a few questions: the single-client latency on this machine
        single = []
        for q in questions[:10]:
            t0 = time.monotonic()
            check(httpx.post(f"{server.url}/ask", json={"question": q}, timeout=60
                             ).status_code == 200, "single client")
            single.append((time.monotonic() - t0) * 1000)
        out["single_client_ms_p50"] = round(percentile(single, 50), 1)
        log(f"load: {clients} clients for {seconds:.0f} s (max_queue 64) ...")
        res = asyncio.run(_clients(server.url, questions, clients, seconds, seed))
        out["load"] = res
        log(f"load: {json.dumps(res)}")
        fivexx = {k: v for k, v in res["statuses"].items() if k.startswith("5")}
        check(not fivexx, f"5xx under load: {fivexx}")
        check(not res["dropped"], f"dropped connections: {res['dropped']}")
        check(set(res["statuses"]) == {"200"}, f"statuses {res['statuses']}")
    finally:
        out["sigterm_exit"] = server.stop()
    check(out["sigterm_exit"] == 0, f"SIGTERM exit status {out['sigterm_exit']}")

    server = Server(work, data, idx, None, "overload-server", CITEQA_MAX_QUEUE="4")
    server.ready()
    try:
        log(f"overload: {clients} clients for {overload_seconds:.0f} s with CITEQA_MAX_QUEUE=4 ...")
        res = asyncio.run(_clients(server.url, questions, clients, overload_seconds, seed + 1))
        out["overload"] = res
        log(f"overload: {json.dumps(res)}")
        check(set(res["statuses"]) <= {"200", "503"}, f"statuses {res['statuses']}")
        check(res["statuses"].get("503", 0) > 0, "no 503 under overload")
        check(res["busy_without_retry_after"] == 0, "503 without Retry-After")
        check(not res["dropped"], f"dropped connections: {res['dropped']}")
        check(res["busy_ms"]["p95"] < 250, f"slow 503s: {res['busy_ms']}")
        # at most 4 admitted: a 200 waits for at most 3 others, plus its own work
        bound = 4 * 4 * max(out["single_client_ms_p50"], 100)
        out["overload_ok_p99_bound_ms"] = bound
        check(res["ok_ms"]["p99"] < bound, f"200s' p99 {res['ok_ms']['p99']} ms > {bound} ms")
        time.sleep(1)
        r = httpx.post(f"{server.url}/ask", json={"question": questions[0]}, timeout=60)
        check(r.status_code == 200, f"after the flood: {r.status_code}")
    finally:
        out["overload_sigterm_exit"] = server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", action="append",
                    choices=["crash-index", "crash-upload", "load"], help="default: all")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--paragraphs", type=int, default=6,
                    help="first paragraphs of each SQuAD article (0: whole articles)")
    ap.add_argument("--upload-rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--overload-seconds", type=float, default=20)
    ap.add_argument("--budget", type=float, default=600, help="time bound of the kill loop (s)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    args = ap.parse_args()
    phases = args.phase or ["crash-index", "crash-upload", "load"]
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    root = Path(tempfile.mkdtemp(prefix="citeqa-stress-"))
    failed = None
    try:
        for phase in phases:
            work = root / phase
            work.mkdir()
            t0 = time.monotonic()
            try:
                if phase == "crash-index":
                    results[phase] = crash_index(work, args.kills, args.paragraphs, args.budget,
                                                 args.seed)
                elif phase == "crash-upload":
                    results[phase] = crash_upload(work, args.upload_rounds, args.paragraphs,
                                                  args.seed)
                else:
                    results[phase] = load(work, args.clients, args.seconds,
                                          args.overload_seconds, args.seed)
            except CheckFailed as exc:
                failed = f"{phase}: {exc}"
                results[phase + "_failed"] = str(exc)
                log(f"FAILED {failed}")
                break
            results[phase + "_s"] = round(time.monotonic() - t0, 1)
            log(f"{phase}: passed in {results[phase + '_s']} s")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"work folders kept in {root}")
    summary = {k: v for k, v in results.items() if k != "crash-index"} | (
        {"crash-index": {k: v for k, v in results["crash-index"].items() if k != "rounds_detail"}}
        if "crash-index" in results else {})
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
