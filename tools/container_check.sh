#!/usr/bin/env bash
# Builds the real Dockerfile with buildah and runs the image, with no Docker engine and no
# image registry (issue 9, item 3):
#   1. a stand-in for the official Python base image: Debian bookworm (debootstrap minbase,
#      from this machine's own apt mirror) with bookworm's python3 (3.11) and pip, cached
#      under /var/tmp/flou-container-cache (reused when present, rebuilt when not);
#   2. `buildah build` of ./Dockerfile on that base (vfs storage, chroot isolation), the
#      host's CA bundle mounted for pip behind the TLS proxy (PIP_CERT);
#   3. the image's ENTRYPOINT + CMD run by `buildah run --isolation chroot` as the image
#      configures them (env, user, working dir), the demo machines mounted as compose does;
#   4. the image's HEALTHCHECK command run inside the container until it passes, then a
#      Start / Transition / Watch from the host over loopback (tools/container_smoke.py);
#   5. the image's STOPSIGNAL sent to the server: it must exit 0 and log its graceful stop.
# Prints the image size and the start-up time to SERVING. Everything it builds lives in a
# throw-away buildah storage that is deleted at the end; only the base rootfs is cached.
set -euo pipefail

STANDIN_VERSION="1"  # bump to rebuild every cached stand-in base
SUITE="bookworm"
STANDIN_PACKAGES="python3,python3-pip,python3-venv,ca-certificates,passwd"
CACHE_DIR="${FLOU_CONTAINER_CACHE:-/var/tmp/flou-container-cache}"
IMAGE="localhost/flou-grpc:container-check"
BASE_IMAGE="localhost/flou-standin-python:3.11-${SUITE}"
DEMO_APP="examples.orders,examples.crawl"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
START_ALL=$SECONDS

log() { printf '\n== %s\n' "$*"; }
die() { printf 'container-check: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah with vfs storage and chroot isolation)"
[ -x "$PY" ] || die "no $PY: run 'make install' first"

# --- tools -------------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing buildah and debootstrap (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends buildah debootstrap \
        || { apt-get update -qq && apt-get install -y --no-install-recommends buildah debootstrap; }
fi

# --- the Debian mirror, read from this machine's apt sources ------------------------------
MIRROR="$(python3 - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
found = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    if path.endswith(".sources"):  # deb822 stanzas
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
                found += fields.get("uris", [])
    elif path.endswith(".list"):
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb" and line[2] == suite:
                found.append(line[1])
if not found:
    sys.exit(f"no 'deb ... {suite}' source in /etc/apt/sources.list(.d)")
print(found[0].rstrip("/"))
EOF
)"
echo "Debian mirror (from apt sources): $MIRROR"

# --- a throw-away buildah storage (vfs), deleted at exit ------------------------------------
mkdir -p "$CACHE_DIR"
WORK="$(mktemp -d /var/tmp/flou-container-check.XXXXXX)"
BUILDAH=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
SERVER_LOG="$WORK/server.log"
RUN_PID=""
CONTAINER=""

cleanup() {
    local code=$?
    set +e
    if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
        pkill -KILL -P "$RUN_PID" 2>/dev/null
        kill -KILL "$RUN_PID" 2>/dev/null
        wait "$RUN_PID" 2>/dev/null
    fi
    if [ -d "$WORK/storage" ]; then
        "${BUILDAH[@]}" rm --all >/dev/null 2>&1
        "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    if [ "$code" != 0 ]; then
        echo "container-check: FAILED (exit $code) after $((SECONDS - START_ALL))s" >&2
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the stand-in base --------------------------------------------------------------------
KEY="$(printf '%s|%s|%s|%s|%s' "$STANDIN_VERSION" "$SUITE" "$MIRROR" "$STANDIN_PACKAGES" \
    "$(dpkg --print-architecture)" | sha256sum | cut -c1-16)"
ROOTFS_TAR="$CACHE_DIR/standin-$SUITE-$KEY.tar"
T=$SECONDS
if [ -s "$ROOTFS_TAR" ] && tar -tf "$ROOTFS_TAR" ./usr/local/bin/python >/dev/null 2>&1; then
    log "stand-in base: cached rootfs $ROOTFS_TAR"
else
    log "stand-in base: debootstrap --variant=minbase $SUITE from $MIRROR"
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase --include="$STANDIN_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
        > "$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    # What the official python image gives that Debian's rootfs does not: `python` on PATH,
    # and a pip allowed to install into the system Python (no PEP 668 marker).
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    chroot "$rootfs" sh -c 'python --version && python -m pip --version && command -v useradd' \
        || die "the stand-in base lacks python, pip or useradd"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -cf "$ROOTFS_TAR.$$.tmp" .
    mv "$ROOTFS_TAR.$$.tmp" "$ROOTFS_TAR"  # atomic: a concurrent run sees all of it or none
    rm -rf "$rootfs"
fi
mkdir -p "$WORK/base"
ln "$ROOTFS_TAR" "$WORK/base/rootfs.tar" 2>/dev/null || cp "$ROOTFS_TAR" "$WORK/base/rootfs.tar"
cat > "$WORK/base/Containerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
EOF
"${BUILDAH[@]}" build --quiet --isolation chroot --format docker -t "$BASE_IMAGE" "$WORK/base" >/dev/null
echo "stand-in base $BASE_IMAGE ready in $((SECONDS - T))s"

# --- 2. the real Dockerfile --------------------------------------------------------------------
log "buildah build ./Dockerfile (PYTHON_IMAGE=$BASE_IMAGE, vfs, chroot isolation)"
T=$SECONDS
CA=/etc/ssl/certs/ca-certificates.crt
"${BUILDAH[@]}" build --isolation chroot --format docker --pull=false \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    --volume "$CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt \
    -f Dockerfile -t "$IMAGE" . 2>&1 | sed 's/^/  | /'
BUILD_SECONDS=$((SECONDS - T))
"${BUILDAH[@]}" inspect --type image "$IMAGE" > "$WORK/image.json"
# One field of the image's Docker config: a list prints one word a line.
conf() {
    python3 - "$WORK/image.json" "$@" <<'EOF2'
import json, sys
value = json.load(open(sys.argv[1]))["Docker"]["config"]
for key in sys.argv[2:]:
    value = (value or {}).get(key)
for word in value if isinstance(value, list) else [value or ""]:
    print(word)
EOF2
}
mapfile -t ENTRY < <(conf Entrypoint)
mapfile -t CMD < <(conf Cmd)
mapfile -t HEALTH < <(conf Healthcheck Test)
USER_ID="$(conf User)"
WORKDIR="$(conf WorkingDir)"
STOPSIG="$(conf StopSignal)"
echo "image config: entrypoint+cmd=[${ENTRY[*]} ${CMD[*]}] user=$USER_ID workdir=$WORKDIR" \
    "stopsignal=$STOPSIG healthcheck=[${HEALTH[*]}]"
[ "$USER_ID" = 10001 ] || die "the image does not run as user 10001"
[ "${HEALTH[0]:-}" = CMD ] || die "the image has no exec-form HEALTHCHECK"
HEALTH=("${HEALTH[@]:1}")

# --- 3. run it as configured -----------------------------------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
CONTAINER="$("${BUILDAH[@]}" from --pull=false --name flou-container-check "$IMAGE")"
log "buildah run: ${ENTRY[*]} ${CMD[*]} (user $USER_ID, FLOU_PORT=$PORT, FLOU_APP=$DEMO_APP, examples/ mounted read-only)"
RUN_ENV=(--env "FLOU_PORT=$PORT" --env "FLOU_APP=$DEMO_APP")
RUN_OPTS=(--isolation chroot --user "$USER_ID" --workingdir "$WORKDIR")
START_NS=$(date +%s%N)
"${BUILDAH[@]}" run "${RUN_OPTS[@]}" "${RUN_ENV[@]}" \
    --volume "$ROOT/examples:/app/examples:ro" \
    "$CONTAINER" -- "${ENTRY[@]}" "${CMD[@]}" > "$SERVER_LOG" 2>&1 &
RUN_PID=$!

# Start-up: until the server logs that it listens (it says SERVING to health just before).
SERVING_MS=""
for _ in $(seq 1 600); do
    if grep -q "flou-grpc listening on" "$SERVER_LOG"; then
        SERVING_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
        break
    fi
    kill -0 "$RUN_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "the server exited at start"; }
    sleep 0.05
done
[ -n "$SERVING_MS" ] || { cat "$SERVER_LOG" >&2; die "the server never listened (30 s)"; }
sed 's/^/  server| /' "$SERVER_LOG"

# --- 4. the HEALTHCHECK inside the container, then the host over loopback ---------------------
log "HEALTHCHECK inside the container: ${HEALTH[*]}"
PROBE_OK=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if "${BUILDAH[@]}" run "${RUN_OPTS[@]}" "${RUN_ENV[@]}" "$CONTAINER" -- "${HEALTH[@]}"; then
        PROBE_OK=$attempt
        break
    fi
    sleep 1
done
[ -n "$PROBE_OK" ] || die "the HEALTHCHECK probe never passed"
echo "probe passed (exit 0) on attempt $PROBE_OK"
SERVING_PROBE_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))

log "Start / Transition / Watch from the host on 127.0.0.1:$PORT"
"$PY" "$ROOT/tools/container_smoke.py" "127.0.0.1:$PORT"

# --- 5. stop it as a container engine would: STOPSIGNAL to the entrypoint process -------------
# The server is the process running the entrypoint under buildah run (pid 1 under a
# container engine); find it among buildah run's descendants (buildah run -> chroot-runtime
# -> buildah-chroot-exec -> the entrypoint), by the image's user and its command line.
descendants() {
    local child
    for child in $(pgrep -P "$1" || true); do
        echo "$child"
        descendants "$child"
    done
}
SERVER_PID=""
for pid in $(descendants "$RUN_PID"); do
    # buildah-chroot-exec (already as the image's user) execs nothing: it forks the command.
    if [ "$(ps -o uid= -p "$pid" | tr -d ' ')" = "$USER_ID" ] \
        && [ "$(ps -o args= -p "$pid" | awk '{print $1}')" != buildah-chroot-exec ] \
        && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "${ENTRY[*]} ${CMD[*]}"; then
        SERVER_PID=$pid
        break
    fi
done
[ -n "$SERVER_PID" ] || die "cannot find the server process under buildah run ($RUN_PID)"
ps -o pid=,ppid=,uid=,stat=,args= -p "$(descendants "$RUN_PID" | paste -sd, -)" | sed 's/^/  ps| /'
log "kill -s ${STOPSIG#SIG} $SERVER_PID (the server, uid $USER_ID)"
STOP_NS=$(date +%s%N)
kill -s "${STOPSIG#SIG}" "$SERVER_PID"
RUN_CODE=""
for _ in $(seq 1 300); do
    if ! kill -0 "$RUN_PID" 2>/dev/null; then
        set +e; wait "$RUN_PID"; RUN_CODE=$?; set -e
        break
    fi
    sleep 0.1
done
RUN_PID_DONE=$RUN_PID
RUN_PID=""
[ -n "$RUN_CODE" ] || die "the server did not stop within 30 s of SIGTERM"
STOP_MS=$(( ($(date +%s%N) - STOP_NS) / 1000000 ))
sed -n '/flou-grpc listening on/,$p' "$SERVER_LOG" | tail -n +2 | sed 's/^/  server| /'
[ "$RUN_CODE" = 0 ] || die "buildah run ($RUN_PID_DONE) exited $RUN_CODE after the stop signal"
grep -q "flou-grpc stopped" "$SERVER_LOG" || die "the server did not log its graceful stop"
echo "stopped cleanly: exit 0 in ${STOP_MS} ms"

# --- report -------------------------------------------------------------------------------------
IMAGE_SIZE="$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE")"
BASE_SIZE="$("${BUILDAH[@]}" images --format '{{.Size}}' "$BASE_IMAGE")"
log "container-check passed"
echo "image $IMAGE: $IMAGE_SIZE (stand-in base $BASE_SIZE; the official python:3.11-slim base differs)"
echo "build: ${BUILD_SECONDS}s; start-up to SERVING: ${SERVING_MS} ms (server log), HEALTHCHECK passed at ${SERVING_PROBE_MS} ms"
echo "total: $((SECONDS - START_ALL))s"
