#!/usr/bin/env bash
# make check-container: the Dockerfile, executed without a Docker engine.
#
# Builds (once, cached in .container/) a Debian bookworm root filesystem with debootstrap plus
# python3 (bookworm's python3 is 3.11), python3-venv and ca-certificates: the release and the
# Python minor version of the Dockerfile's base, python:3.11-slim-bookworm (whose Python is
# python.org's 3.11.x in /usr/local rather than Debian's 3.11.2; that difference is not checked).
# Then it reads the Dockerfile and runs its instructions in a fresh copy of that root: ENV,
# WORKDIR, USER, COPY (the files the COPY lines name that git tracks or does not ignore, links
# kept, --chown applied), RUN (as the current USER with the image's environment: /bin/sh -c in a
# chroot; it runs scripts/container_build.sh, the steps the image is built with). Last, in a new
# network namespace whose only interface is its own loopback (so 0.0.0.0 is not reachable from
# the host, and the server has no network at all), it starts the Dockerfile's CMD, runs its
# HEALTHCHECK command exactly as written until it answers, POSTs one /ask and checks the cited
# span against the file, and stops the server by its PID with SIGTERM.
#
# Adaptations to this machine, printed as they are made: TORCH_INDEX_URL is emptied (PyTorch's
# index is not reachable here; pip finds torch through this machine's pip configuration, which
# is copied into the root together with the files and local indexes it names, read-only), and
# /etc/resolv.conf and the host's CA bundle are copied in for the install steps.
# Not checked: `docker build` itself (BuildKit's COPY, layers, .dockerignore), the
# python:3.11-slim image's own Python build, and Docker's runtime (cgroups, PID 1, VOLUME).
#
# Needs root, debootstrap (installed with apt-get if missing), unshare, chroot and ip. Runs in a
# private mount namespace, so its mounts vanish with it even if it is killed.
# Env: CITEQA_CONTAINER_DIR (cache and work folder, default .container), DEBIAN_MIRROR,
#      CHECK_TORCH_INDEX_URL (default empty), KEEP_ROOT=1 (keep the built root after success).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self="$here/scripts/check_container.sh"
work=${CITEQA_CONTAINER_DIR:-$here/.container}
suite=bookworm
variant=minbase
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_packages=python3,python3-venv,ca-certificates
expected_from=python:3.11-slim-bookworm
question="why was the counter-ISIS campaign paused?"
root=$work/root

say() { echo "check-container: $*"; }
fail() { echo "check-container: FAILED: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Helpers in Python (host python3): the Dockerfile parser, COPY, the pip configuration.
read -r -d '' HELPER <<'PY' || true
import configparser, json, os, re, shlex, shutil, subprocess, sys

def die(msg):
    sys.exit(f"check-container: FAILED: {msg}")

def duration(text, line):
    total, rest = 0.0, text
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
        rest = rest.replace(num + unit, "", 1)
    if rest or not text:
        die(f"Dockerfile line {line}: cannot read the duration {text!r}")
    return str(total)

def argv_of(rest):
    """Exec form (JSON array) as is; shell form the way Docker runs it: /bin/sh -c."""
    if rest.startswith("["):
        try:
            argv = json.loads(rest)
            if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
                return argv
        except ValueError:
            pass
    return ["/bin/sh", "-c", rest]

def parse(path):
    """The Dockerfile as bash calls `df KEYWORD LINE ARGS...`. Anything this check does not
    emulate is refused, so a new instruction cannot pass unchecked."""
    instrs, buf, start = [], None, 0
    for n, raw in enumerate(open(path, encoding="utf-8").read().split("\n"), 1):
        s = raw.strip()
        if s.startswith("#"):
            if re.match(r"#\s*escape\s*=", s) and not instrs and buf is None:
                die("Dockerfile: the escape directive is not emulated")
            continue  # comments are dropped, inside a continuation too
        if not s:
            continue
        if buf is None:
            buf, start = "", n
        m = re.search(r"\\[ \t]*$", raw)
        if m:
            buf += raw[: m.start()]
            continue
        instrs.append((start, (buf + raw).strip()))
        buf = None
    if buf is not None:
        die("Dockerfile ends inside a continuation line")
    out, froms = [], 0
    for line, text in instrs:
        kw, rest = re.match(r"(\S+)\s*(.*)$", text, re.S).groups()
        kw, rest = kw.upper(), rest.strip()
        if kw not in ("RUN", "CMD", "HEALTHCHECK") and "$" in rest:
            die(f"Dockerfile line {line}: variable substitution in {kw} is not emulated")
        if kw == "FROM":
            froms += 1
            if froms > 1:
                die(f"Dockerfile line {line}: multi-stage builds are not emulated")
            args = [rest]
        elif kw == "ENV":
            toks = shlex.split(rest)
            if len(toks) == 2 and "=" not in toks[0]:
                toks = [f"{toks[0]}={toks[1]}"]
            if not toks or not all(re.match(r"[A-Za-z_][A-Za-z0-9_]*=", t) for t in toks):
                die(f"Dockerfile line {line}: cannot read ENV {rest!r}")
            args = toks
        elif kw in ("WORKDIR", "USER"):
            args = [rest]
        elif kw == "COPY":
            toks = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            chown = ""
            while toks and toks[0].startswith("--"):
                flag = toks.pop(0)
                if flag.startswith("--chown="):
                    chown = flag.split("=", 1)[1]
                else:
                    die(f"Dockerfile line {line}: COPY {flag} is not emulated")
            if len(toks) < 2 or any(c in t for t in toks for c in "*?["):
                die(f"Dockerfile line {line}: COPY needs plain sources and a destination")
            args = [chown] + toks
        elif kw in ("RUN", "CMD"):
            if rest.startswith("--"):
                die(f"Dockerfile line {line}: {kw} flags are not emulated")
            args = argv_of(rest)
        elif kw == "HEALTHCHECK":
            m = re.match(r"((?:--\S+\s+)*)CMD\s+(.*)$", rest, re.S | re.I)
            if not m:
                die(f"Dockerfile line {line}: only HEALTHCHECK [OPTIONS] CMD is emulated")
            opts = dict(o[2:].partition("=")[::2] for o in m.group(1).split())
            cmd = m.group(2).strip()
            known = {"interval": "30s", "timeout": "30s", "start-period": "0s", "retries": "3"}
            for k in opts:
                if k not in known and k != "start-interval":
                    die(f"Dockerfile line {line}: HEALTHCHECK --{k} is not emulated")
            vals = {**known, **opts}
            args = [duration(vals["interval"], line), duration(vals["timeout"], line),
                    duration(vals["start-period"], line), str(int(vals["retries"])), "--"]
            args += argv_of(cmd)
        elif kw in ("VOLUME", "EXPOSE"):
            args = json.loads(rest) if rest.startswith("[") else rest.split()
        elif kw == "LABEL":
            continue
        else:
            die(f"Dockerfile line {line}: {kw} is not emulated by scripts/check_container.sh "
                "(it runs FROM, ENV, WORKDIR, COPY, RUN, USER, VOLUME, EXPOSE, HEALTHCHECK, "
                "CMD); extend the check before using it")
        out.append(" ".join(shlex.quote(a) for a in ["df", kw, str(line)] + args))
    print("\n".join(out))

def tracked(repo, src):
    """The paths under src that git tracks or does not ignore: the build context of a clean
    checkout, plus new files not yet committed (.dockerignore itself is not applied)."""
    res = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard", "--", src],
                         capture_output=True, check=True)
    paths = [p.decode() for p in res.stdout.split(b"\0") if p]
    gone = [p for p in paths if not os.path.lexists(os.path.join(repo, p))]
    if gone:
        die(f"COPY {src}: tracked but missing from the working tree: {gone[:5]}")
    return paths

def copy(repo, root, workdir, uid, gid, *args):
    """COPY [--chown] src... dest into root: a directory's contents, files by name; links are
    copied as links; new files and folders get uid:gid (root:root without --chown)."""
    *srcs, dest = args
    uid, gid = int(uid), int(gid)
    dest_abs = os.path.normpath(dest if dest.startswith("/") else os.path.join(workdir, dest))
    as_dir = dest.endswith("/") or len(srcs) > 1

    def makedirs(d):  # inside root; new folders get the owner, like BuildKit
        parts, cur = [p for p in d.split("/") if p], root
        for p in parts:
            cur = os.path.join(cur, p)
            if os.path.islink(cur):
                die(f"COPY destination goes through a link: {cur}")
            if not os.path.isdir(cur):
                os.mkdir(cur)
                os.lchown(cur, uid, gid)

    def put(src_file, target):
        makedirs(os.path.dirname(target))
        dst = root + target
        if os.path.lexists(dst) and not os.path.isdir(dst):
            os.unlink(dst)
        if os.path.islink(src_file):
            os.symlink(os.readlink(src_file), dst)
        else:
            shutil.copy2(src_file, dst)
        os.lchown(dst, uid, gid)

    count = 0
    for src in srcs:
        src = os.path.normpath(src)
        full = os.path.join(repo, src)
        paths = tracked(repo, src)
        if not paths:
            die(f"COPY {src}: no such file that git tracks or does not ignore")
        if os.path.isdir(full) and not os.path.islink(full):
            for p in paths:
                put(os.path.join(repo, p), os.path.join(dest_abs, os.path.relpath(p, src)))
        else:
            put(full, os.path.join(dest_abs, os.path.basename(src)) if as_dir else dest_abs)
        count += len(paths)
    print(count)

def pipconf(out):
    """The host's effective pip configuration as one site-wide file, plus the local files and
    folders it names (printed as FILE/DIR lines for the caller to copy or bind read-only)."""
    files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
             os.path.expanduser("~/.config/pip/pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    cp = configparser.ConfigParser(interpolation=None)
    cp.read([f for f in files if os.path.isfile(f)])
    with open(out, "w") as fh:
        cp.write(fh)
    seen = set()
    for section in cp.sections():
        for value in cp[section].values():
            for word in value.split():
                path = word[len("file://"):] if word.startswith("file://") else word
                if os.path.basename(path.rstrip("/")) == "simple":
                    path = os.path.dirname(path.rstrip("/"))  # a local index links to ../files
                if path.startswith("/") and os.path.exists(path) and path not in seen:
                    seen.add(path)
                    print(("DIR " if os.path.isdir(path) else "FILE ") + path)

cmd, *rest = sys.argv[1:]
{"parse": parse, "copy": copy, "pipconf": pipconf}[cmd](*rest)
PY
helper() { python3 -c "$HELPER" "$@"; }

# ---------------------------------------------------------------------------------------------
# Steps, their durations and the summary.
STEP_NAME=""
STEP_LOG=()
step_begin() { STEP_NAME=$1; STEP_T=$EPOCHREALTIME; echo; echo "==> $1"; }
step_end() {
  local d; d=$(elapsed "$STEP_T")
  STEP_LOG+=("$(printf '%8s s  %s' "$d" "$STEP_NAME")")
  echo "    ($d s)"
  STEP_NAME=""
}
summary() {
  echo
  echo "check-container: step durations"
  local l
  for l in "${STEP_LOG[@]}"; do echo "  $l"; done
  printf '%8s s  total\n' "$(elapsed "$T0")" | sed 's/^/  /'
}

mounted_under() { awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo; }
safe_rm() {  # never rm -rf through a bind mount (/dev, /opt/wheels)
  local d=$1 m
  [ -e "$d" ] || return 0
  for m in $(mounted_under "$d" | sort -r); do umount -R "$m" 2>/dev/null || umount -l "$m" || true; done
  [ -z "$(mounted_under "$d")" ] || fail "still mounted under $d: $(mounted_under "$d" | tr '\n' ' ')"
  rm -rf --one-file-system "$d"
}

# ---------------------------------------------------------------------------------------------
# The image state while the Dockerfile runs: ENV, WORKDIR, USER, CMD, HEALTHCHECK, EXPOSE.
declare -A ENVV=([PATH]=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin [LANG]=C.UTF-8)
declare -a ENV_ORDER=(PATH LANG)
WORKDIR=/
USER_SPEC=root
CMD_ARGV=()
HC=()
EXPOSED=()
VOLUMES=()

# uid, gid and home of a USER spec (name or number, optional :group), looked up in the root.
resolve_user() {
  local spec=$1 u g uid gid home
  u=${spec%%:*}; g=""; [[ $spec == *:* ]] && g=${spec#*:}
  if [[ $u =~ ^[0-9]+$ ]]; then
    uid=$u; gid=$(awk -F: -v u="$u" '$3 == u { print $4; exit }' "$root/etc/passwd")
    home=$(awk -F: -v u="$u" '$3 == u { print $6; exit }' "$root/etc/passwd")
  else
    uid=$(awk -F: -v u="$u" '$1 == u { print $3; exit }' "$root/etc/passwd")
    gid=$(awk -F: -v u="$u" '$1 == u { print $4; exit }' "$root/etc/passwd")
    home=$(awk -F: -v u="$u" '$1 == u { print $6; exit }' "$root/etc/passwd")
    [ -n "$uid" ] || fail "USER $u: no such user in the image"
  fi
  if [ -n "$g" ]; then
    if [[ $g =~ ^[0-9]+$ ]]; then gid=$g
    else gid=$(awk -F: -v g="$g" '$1 == g { print $3; exit }' "$root/etc/group"); fi
  fi
  echo "$uid" "${gid:-$uid}" "${home:-/}"
}

# The command line that runs argv in the root as the current USER, in WORKDIR, with exactly the
# image's environment (in IMAGE_CMD; chroot, env and sh exec, so its PID is argv's).
image_cmd() {
  local uid gid home k
  read -r uid gid home < <(resolve_user "$USER_SPEC")
  local envs=("HOME=${ENVV[HOME]:-$home}")
  for k in "${ENV_ORDER[@]}"; do envs+=("$k=${ENVV[$k]}"); done
  # shellcheck disable=SC2016  # $1 and $@ are for the sh inside the root
  IMAGE_CMD=(chroot --userspec="$uid:$gid" --groups="$gid" "$root" /usr/bin/env -i "${envs[@]}"
    /bin/sh -c 'cd "$1" || exit 1; shift; exec "$@"' sh "$WORKDIR" "$@")
}
in_image() { image_cmd "$@"; "${IMAGE_CMD[@]}"; }

df() { local kw=$1; shift; "df_$kw" "$@"; }

df_FROM() {
  local line=$1 image=$2
  [ "$image" = "$expected_from" ] ||
    fail "Dockerfile line $line: FROM $image, but this check reproduces $expected_from (Debian $suite); update both together"
  step_begin "FROM $image: a fresh copy of the cached $suite root"
  safe_rm "$root"
  mkdir -p "$root"
  tar --numeric-owner -xpf "$base_tar" -C "$root"
  local pyver
  pyver=$(chroot "$root" /usr/bin/python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
  [[ $pyver == 3.11.* ]] || fail "python3 in the $suite root is $pyver, not 3.11"
  say "python3 $pyver (Debian $suite's; the image's is python.org's 3.11 in /usr/local)"
  # Host adaptations for the install steps: DNS, this machine's CA bundle, its pip config.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  grep -q localhost "$root/etc/hosts" 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >>"$root/etc/hosts"
  local kind path
  while read -r kind path; do
    if [ "$kind" = DIR ]; then
      mkdir -p "$root$path"
      mount --bind "$path" "$root$path"
      MOUNTS+=("$root$path")
      mount -o remount,bind,ro "$root$path"
    else
      mkdir -p "$(dirname "$root$path")"; cp "$path" "$root$path"
    fi
    say "host pip setting needs $path: ${kind,,} $( [ "$kind" = DIR ] && echo 'bound read-only' || echo copied)"
  done < <(helper pipconf "$root/etc/pip.conf")
  mount -t proc proc "$root/proc"; MOUNTS+=("$root/proc")
  mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"; MOUNTS+=("$root/dev")
  step_end
}

df_ENV() {
  local line=$1 kv k v; shift
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}
    if [ "$k" = TORCH_INDEX_URL ]; then
      say "ENV TORCH_INDEX_URL=$v replaced by '${CHECK_TORCH_INDEX_URL:-}' (not reachable here; pip finds the CPU torch through this machine's pip config)"
      v=${CHECK_TORCH_INDEX_URL:-}
    fi
    [ -n "${ENVV[$k]+x}" ] || ENV_ORDER+=("$k")
    ENVV[$k]=$v
  done
}

df_WORKDIR() {
  local line=$1 d=$2
  [[ $d == /* ]] || d="$WORKDIR/$d"
  mkdir -p "$root$d"
  WORKDIR=$d
}

df_USER() { USER_SPEC=$2; }

df_COPY() {
  local line=$1 chown=$2 uid=0 gid=0 home n; shift 2
  if [ -n "$chown" ]; then
    read -r uid gid home < <(resolve_user "$chown")
  fi
  step_begin "COPY ${chown:+--chown=$chown }$*"
  n=$(helper copy "$here" "$root" "$WORKDIR" "$uid" "$gid" "$@")
  say "$n files, owner $uid:$gid"
  step_end
}

df_RUN() {
  local line=$1; shift
  step_begin "RUN ${*: -1}   (as $USER_SPEC in $WORKDIR)"
  local rc=0
  # This machine's local pip indexes lack most projects; pip says so for each (kept in the log).
  { in_image "$@" 2>&1 | tee -a "$work/build.log" |
      { grep -v "^WARNING: Location 'file:///.*' is ignored: it is neither a file nor a directory.$" || true; }
  } || rc=$?
  [ "$rc" = 0 ] || fail "Dockerfile line $line: RUN ${*: -1} exited with $rc (log: $work/build.log)"
  step_end
}

df_CMD() { shift; CMD_ARGV=("$@"); }
df_HEALTHCHECK() { shift; HC=("$@"); }
df_EXPOSE() { shift; EXPOSED+=("$@"); }
df_VOLUME() { shift; VOLUMES+=("$@"); }

# ---------------------------------------------------------------------------------------------
# Phase 3: in the new network namespace (called by phase 2 through unshare --net).
serve_phase() {
  # shellcheck disable=SC1091  # written by main_phase: the image's final ENV, USER, CMD...
  source "$work/state.sh"
  ip link set lo up
  [ "$(readlink /proc/self/ns/net)" != "$HOST_NETNS" ] || fail "not in a new network namespace"
  local port=${EXPOSED[0]%%/*} interval=${HC[0]} timeout=${HC[1]} start=${HC[2]} retries=${HC[3]}
  local hc_argv=("${HC[@]:5}")
  local log=$work/serve.log t pid
  SERVER_PID=""
  stop_server() {  # SIGTERM, as docker stop; SIGKILL after 10 s, as docker stop, and say so
    [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null || return 0
    kill -TERM "$SERVER_PID"
    local i
    for i in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    return 1
  }
  trap 'stop_server || true' EXIT
  t=$EPOCHREALTIME
  image_cmd "${CMD_ARGV[@]}"
  "${IMAGE_CMD[@]}" >"$log" 2>&1 &
  pid=$!
  SERVER_PID=$pid
  say "CMD ${CMD_ARGV[*]} started as PID $pid (as $USER_SPEC), netns $(readlink /proc/$pid/ns/net) (host: $HOST_NETNS)"
  # The HEALTHCHECK's command, as written, until it succeeds: Docker would call the container
  # unhealthy after --start-period plus --retries failures --interval apart.
  local deadline tries=0
  deadline=$(awk -v a="$start" -v b="$interval" -v r="$retries" 'BEGIN { print a + b * r }')
  image_cmd "${hc_argv[@]}"
  local hc_cmd=("${IMAGE_CMD[@]}")
  until timeout "$timeout" "${hc_cmd[@]}" >/dev/null 2>&1; do
    tries=$((tries + 1))
    kill -0 "$pid" 2>/dev/null || { tail -30 "$log" >&2; fail "the server exited before the HEALTHCHECK answered (log above: $log)"; }
    awk -v a="$t" -v b="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(b - a > d) }' &&
      { tail -30 "$log" >&2; fail "HEALTHCHECK did not pass within ${deadline} s (start-period + retries x interval)"; }
    sleep 1
  done
  say "HEALTHCHECK command answered $(elapsed "$t") s after start (after $tries failed tries): ${hc_argv[*]}"
  # Listening on 0.0.0.0:PORT, in this namespace only (state 0A = LISTEN in /proc/net/tcp).
  local hexport; hexport=$(printf '%04X' "$port")
  grep -q " 00000000:$hexport [0-9A-F:]* 0A " "/proc/$pid/net/tcp" ||
    fail "the server does not listen on 0.0.0.0:$port (EXPOSE $port)"
  say "listening on 0.0.0.0:$port inside the namespace only"
  t=$EPOCHREALTIME
  in_image /app/.venv/bin/python - "$port" "$question" <<'PY' || fail "POST /ask did not return a verified answer (log: $log)"
import json, os, sys, time, urllib.error, urllib.request

port, question = int(sys.argv[1]), sys.argv[2]
base = f"http://127.0.0.1:{port}"
for _ in range(300):  # /health is liveness; /ready says the index is loaded
    try:
        urllib.request.urlopen(base + "/ready", timeout=5)
        break
    except (urllib.error.URLError, OSError):
        time.sleep(0.5)
req = urllib.request.Request(base + "/ask", data=json.dumps({"question": question}).encode(),
                             headers={"content-type": "application/json"})
t = time.perf_counter()
with urllib.request.urlopen(req, timeout=120) as r:
    body = json.load(r)
ms = (time.perf_counter() - t) * 1000
assert not body["no_answer"] and body["answers"], body
a = body["answers"][0]
c = a["citation"]
docs = os.path.join("/app/citeqa/corpus")
with open(os.path.join(docs, c["file"]), encoding="utf-8", newline="") as fh:
    text = fh.read()
assert text[c["start"]:c["end"]] == a["text"], (c, a["text"])
print(f"check-container: POST /ask {question!r} -> {a['text'][:90]!r} "
      f"({c['file']} paragraph {c['paragraph']}, {c['start']}:{c['end']}, verified in the file; "
      f"{ms:.0f} ms)")
PY
  say "/ready + POST /ask took $(elapsed "$t") s"
  if grep -q ExportFallbackWarning "$log"; then
    fail "the server fell back to torch for question embeddings (ExportFallbackWarning in $log)"
  fi
  t=$EPOCHREALTIME
  stop_server || fail "the server (PID $pid) did not stop within 10 s of SIGTERM (docker stop would kill it)"
  wait "$pid" 2>/dev/null || true
  say "server PID $pid stopped by SIGTERM in $(elapsed "$t") s"
}

# ---------------------------------------------------------------------------------------------
# Phase 2: everything else, in a private mount namespace.
main_phase() {
  MOUNTS=()
  cleanup() {
    local rc=$? m
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
      m=${MOUNTS[i]}; umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
      [ -n "$STEP_NAME" ] && echo "check-container: FAILED during: $STEP_NAME" >&2
      summary >&2
      echo "check-container: FAILED (exit $rc); the root is kept for inspection: $root" >&2
    fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$work"
  exec 9>"$work/lock"
  flock -n 9 || fail "another check-container is running ($work/lock)"
  : >"$work/build.log"

  step_begin "Debian $suite root ($variant + $base_packages), cached"
  local key
  key=$(printf '%s\n' "$suite" "$variant" "$mirror" "$base_packages" | sha256sum | cut -c1-12)
  base_tar=$work/base-$suite-$key.tar
  if [ -f "$base_tar" ]; then
    say "cached: $base_tar"
  else
    local tmp=$work/base.tmp
    safe_rm "$tmp"
    say "debootstrap --variant=$variant --include=$base_packages $suite $mirror"
    debootstrap --variant="$variant" --include="$base_packages" "$suite" "$tmp" "$mirror" \
      >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed (log: $work/debootstrap.log)"; }
    chroot "$tmp" apt-get clean
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
    [ -z "$(mounted_under "$tmp")" ] || fail "debootstrap left mounts under $tmp"
    tar --numeric-owner -cpf "$base_tar.part" -C "$tmp" .
    mv "$base_tar.part" "$base_tar"
    safe_rm "$tmp"
    say "built and cached: $base_tar ($(du -h "$base_tar" | cut -f1))"
  fi
  step_end

  local plan=$work/plan.sh
  helper parse "$here/Dockerfile" >"$plan"
  say "Dockerfile read: $(wc -l <"$plan") instructions"
  # shellcheck disable=SC1090
  source "$plan"

  # What the image must be, beyond running: non-root uid 10001 and the index.
  local uid gid home
  read -r uid gid home < <(resolve_user "$USER_SPEC")
  [ "$uid" = 10001 ] || fail "the image's USER is uid $uid, not the non-root 10001"
  local user_name; user_name=$(awk -F: -v u="$uid" '$3 == u { print $1 }' "$root/etc/passwd")
  say "USER $USER_SPEC is $user_name ($uid:$gid), home $home"
  [ "$(readlink "$root/app/citeqa/index")" = ../index ] || fail "/app/citeqa/index is not the link ../index"
  local data=${ENVV[CITEQA_DATA_DIR]:-/data}
  [ -f "$root$data/index/CURRENT" ] || fail "no index in $data/index after the build"
  # The default embedder (citeqa-retriever) is shipped as INT8 ONNX: the index records it, and
  # serving needs no export cache and no torch.
  grep -qs '"citeqa-retriever"' "$root$data"/index/*/manifest.json ||
    fail "the index in $data/index was not built with the default embedder citeqa-retriever"
  if grep -q ExportFallbackWarning "$work/build.log"; then
    fail "the build fell back to torch (ExportFallbackWarning in $work/build.log)"
  fi
  say "built: $data/index ($(du -sh "$root$data" | cut -f1)), /app/.venv ($(du -sh "$root/app/.venv" | cut -f1))"
  [ ${#CMD_ARGV[@]} -gt 0 ] && [ ${#HC[@]} -gt 5 ] && [ ${#EXPOSED[@]} -gt 0 ] ||
    fail "the Dockerfile needs CMD, HEALTHCHECK ... CMD and EXPOSE"

  step_begin "CMD in a new network namespace, its HEALTHCHECK, POST /ask, SIGTERM"
  HOST_NETNS=$(readlink /proc/self/ns/net)
  declare -p ENVV ENV_ORDER WORKDIR USER_SPEC CMD_ARGV HC EXPOSED root HOST_NETNS >"$work/state.sh"
  unshare --net -- "$BASH" "$self" __serve || fail "the serve step failed (log: $work/serve.log)"
  step_end

  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -R "${MOUNTS[i]}"; done
  MOUNTS=()
  if [ "${KEEP_ROOT:-0}" = 1 ]; then say "root kept: $root"; else safe_rm "$root"; fi
  summary
  say "PASSED: the Dockerfile's steps on Debian $suite, serving on 0.0.0.0:${EXPOSED[0]%%/*} in the root, HEALTHCHECK answering"
}

# ---------------------------------------------------------------------------------------------
case "${1:-}" in
  __main) main_phase ;;
  __serve) serve_phase ;;
  "")
    [ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, mount and network namespaces)"
    for tool in unshare chroot ip git python3 tar flock; do
      command -v "$tool" >/dev/null || fail "$tool is not installed"
    done
    if ! command -v debootstrap >/dev/null; then
      say "installing debootstrap (apt-get)"
      { apt-get update -q && apt-get install -y -q debootstrap; } >/dev/null ||
        fail "could not install debootstrap: apt-get install debootstrap"
    fi
    export T0=$EPOCHREALTIME
    exec unshare --mount --propagation private -- "$BASH" "$self" __main
    ;;
  *) fail "usage: $0" ;;
esac
