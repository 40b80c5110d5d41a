#!/usr/bin/env bash
# Benchmark: a 5-container deployment, end to end, against docker-compose.
# Prints figures only (no assertions).
#
#   scripts/bench-deploy.sh
#
# Needs the test environment of scripts/test.sh (Docker engine, the local
# registry with htpasswd auth and the test images): run
# `SHOAL_TEST_ENV_ONLY=1 scripts/test.sh` once first.
#
# shoal: two daemons on 127.0.0.1, A (runtime none) and B (runtime docker,
# this machine's engine), one team. From A's CLI: the registry with its
# credentials, a product version of 5 images (httpd with a published port
# and four busybox workers with env), a deployment to B. Timed from
# `shoal deploy start --wait` on A: until all 5 containers run on B (as
# compose is timed), and until the command returns the try's success,
# which includes the settle check.
#
# docker-compose: the same 5 services (same images, commands, env, port)
# in one compose file, `docker-compose up -d` on the same engine, timed
# until all 5 containers run. Debian's `docker-compose` is installed with
# apt-get when missing (as root); if it cannot be, the output says so.
#
# Both start with the images already on the engine (pulled once before),
# so neither pulls; shoal still asks the registry for each image's digest.
# The shoal binary is the debug build unless SHOAL_BIN names another.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
load_state_env

registry=${SHOAL_TEST_AUTH_REGISTRY:-$SHOAL_AUTH_REGISTRY_ADDR}
user=${SHOAL_TEST_REGISTRY_USER:-$SHOAL_REGISTRY_USER}
[[ -n ${SHOAL_TEST_REGISTRY_PASSWORD:-} ]] ||
    die "no registry password: run SHOAL_TEST_ENV_ONLY=1 scripts/test.sh first"
docker_answers || die "the Docker engine does not answer"

httpd_ref=$registry/shoal-test/httpd:1.0
busybox_ref=$registry/shoal-test/busybox:1.0
run_id=$$
prefix=bench$run_id
project=benchc$run_id
work=$(mktemp -d)
pids=()

cleanup() {
    local pid id
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for id in $(docker ps -aq --filter "label=io.shoal.prefix=$prefix"); do
        docker rm -f -v "$id" >/dev/null 2>&1 || true
    done
    docker network rm "shoal-$prefix" >/dev/null 2>&1 || true
    if [[ -f $work/compose/docker-compose.yml ]] && command -v docker-compose >/dev/null 2>&1; then
        (cd "$work/compose" && docker-compose -p "$project" down -v >/dev/null 2>&1) || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# ------------------------------------------------ shoal binary
if [[ -n ${SHOAL_BIN:-} ]]; then
    bin=$SHOAL_BIN
else
    section "building shoal (debug)"
    (cd "$repo_root" && cargo build -q -p shoal --bin shoal)
    bin=$repo_root/target/debug/shoal
fi
[[ -x $bin ]] || die "no shoal binary at $bin"

# as NAME ARGS...: run shoal as machine NAME (its own config dir and socket).
as() {
    local name=$1
    shift
    SHOAL_CONFIG_DIR=$work/$name SHOAL_SOCKET=$work/$name/shoal.sock "$bin" "$@"
}

# start_daemon NAME RUNTIME: run NAME's daemon in the background until ready.
start_daemon() {
    local name=$1 runtime=$2
    mkdir -p "$work/$name/data"
    SHOAL_LOG=warn SHOAL_CONFIG_DIR=$work/$name SHOAL_SOCKET=$work/$name/shoal.sock \
        "$bin" node run --data-dir "$work/$name/data" --listen /ip4/127.0.0.1/tcp/0 \
        --no-mdns --runtime "$runtime" --name "$name" \
        >"$work/$name.out" 2>"$work/$name.log" </dev/null &
    pids+=("$!")
    wait_for 60 "daemon $name" grep -q '^ready' "$work/$name.out" ||
        die "daemon $name did not start; see its log: $(tail -n 5 "$work/$name.log")"
}

# all_running NAME...: true when every named container runs.
all_running() {
    local n states
    states=$(docker inspect -f '{{.State.Running}}' "$@" 2>/dev/null) || return 1
    n=$(grep -c '^true$' <<<"$states" || true)
    ((n == $#))
}

# busy-wait variant of wait_for, for timing (polls every 50 ms).
wait_running() {
    local deadline=$((SECONDS + 120))
    until all_running "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

workers=(w1 w2 w3 w4)
loop_cmd="trap 'exit 0' TERM; echo \$ROLE up; while true; do sleep 1 & wait \$!; done"
web_cmd="trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait \$!; wait \$!"

section "images"
docker_login_auth_registry
for ref in "$httpd_ref" "$busybox_ref"; do
    docker --config "$SHOAL_DOCKER_CONFIG" pull -q "$ref" >/dev/null || die "cannot pull $ref"
    info "$ref is on the engine"
done

# ------------------------------------------------ shoal
section "shoal: two daemons, one team"
mkdir -p "$work/a" "$work/b"
as a profile init --name a-person >/dev/null
as b profile init --name b-person >/dev/null
start_daemon a none
start_daemon b docker
as a team create bench >/dev/null
ticket=$(as a team invite --role admin | tail -n 1)
as b team join "$ticket" >/dev/null
wait_for 60 "node b in the team" bash -c \
    "SHOAL_CONFIG_DIR=$work/a SHOAL_SOCKET=$work/a/shoal.sock $bin node list | grep -qw b"
printf '%s\n' "$SHOAL_TEST_REGISTRY_PASSWORD" |
    as a registry add auth --kind v2 --url "$registry" --user "$user" --password-stdin >/dev/null
as a product create bench >/dev/null
as a version create bench 1.0.0 >/dev/null
as a image add bench 1.0.0 "$httpd_ref" --name web >/dev/null
as a image config bench 1.0.0 web --port 8080 --env ROLE=web \
    --cmd sh --cmd -c --cmd "$web_cmd" >/dev/null
for w in "${workers[@]}"; do
    as a image add bench 1.0.0 "$busybox_ref" --name "$w" >/dev/null
    as a image config bench 1.0.0 "$w" --env "ROLE=$w" \
        --cmd sh --cmd -c --cmd "$loop_cmd" >/dev/null
done
deployment=$(as a deploy create bench 1.0.0 --node b --prefix "$prefix" | tail -n 1)
info "deployment $deployment on b, prefix $prefix"

names=("$prefix-web")
for w in "${workers[@]}"; do names+=("$prefix-$w"); done

start=$(now)
as a deploy start "$deployment" --wait --timeout 5m >"$work/start.out" 2>&1 &
cli=$!
# The moment the engine runs all 5, as compose is timed below.
wait_running "${names[@]}" || die "shoal's containers do not all run"
running_s=$(elapsed "$start")
wait "$cli" || die "deploy start failed: $(cat "$work/start.out")"
shoal_s=$(elapsed "$start")
info "deploy start on a -> 5 containers running on b: ${running_s}s"
info "deploy start --wait on a -> returns successful: ${shoal_s}s"
for id in $(docker ps -aq --filter "label=io.shoal.prefix=$prefix"); do
    docker rm -f -v "$id" >/dev/null
done

# ------------------------------------------------ docker-compose
section "docker-compose"
if ! command -v docker-compose >/dev/null 2>&1; then
    if ((EUID == 0)); then
        info "installing Debian's docker-compose"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -q --no-install-recommends docker-compose ||
            { apt-get update -qq && apt-get install -y -q --no-install-recommends docker-compose; }; } \
            >"$work/apt.log" 2>&1 || true
    fi
fi
compose_s=
if ! command -v docker-compose >/dev/null 2>&1; then
    info "docker-compose is not installed and could not be installed (apt-get as root); no comparison"
else
    info "$(docker-compose version --short 2>/dev/null || docker-compose --version)"
    mkdir -p "$work/compose"
    # compose_cmd CMD: CMD as a YAML flow sequence for `sh -c`, quoted.
    compose_cmd() {
        local s=${1//\$/\$\$}
        s=${s//\'/\'\'}
        printf "[\"sh\", \"-c\", '%s']" "$s"
    }
    {
        echo "version: '3'"
        echo "services:"
        echo "  web:"
        echo "    image: $httpd_ref"
        echo "    command: $(compose_cmd "$web_cmd")"
        echo "    environment: [ROLE=web]"
        echo "    ports: [\"8080\"]"
        for w in "${workers[@]}"; do
            echo "  $w:"
            echo "    image: $busybox_ref"
            echo "    command: $(compose_cmd "$loop_cmd")"
            echo "    environment: [ROLE=$w]"
        done
    } >"$work/compose/docker-compose.yml"
    cnames=()
    for s in web "${workers[@]}"; do cnames+=("${project}_${s}_1"); done
    start=$(now)
    (cd "$work/compose" && DOCKER_CONFIG=$SHOAL_DOCKER_CONFIG docker-compose -p "$project" up -d \
        >"$work/compose.out" 2>&1) || die "docker-compose up failed: $(cat "$work/compose.out")"
    wait_running "${cnames[@]}" || die "compose's containers do not all run"
    compose_s=$(elapsed "$start")
    info "docker-compose up -d -> 5 containers running: ${compose_s}s"
fi

# ------------------------------------------------ figures
section "figures (5 containers, same engine, images present)"
printf '  %-44s %8ss\n' "shoal: start on A -> 5 running on B" "$running_s"
printf '  %-44s %8ss\n' "shoal: deploy start --wait returns on A" "$shoal_s"
if [[ -n $compose_s ]]; then
    printf '  %-44s %8ss\n' "docker-compose up -d -> 5 running" "$compose_s"
    ratio() { awk -v a="$1" -v b="$compose_s" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
    printf '  %-44s %8s\n' "ratio shoal / compose (to running)" "$(ratio "$running_s")"
    printf '  %-44s %8s\n' "ratio shoal / compose (--wait returns)" "$(ratio "$shoal_s")"
else
    printf '  %-44s %8s\n' "docker-compose up -d" "n/a (not installed)"
fi
info "shoal's times include the mesh round trips and the registry digest checks; the"
info "--wait time also the settle check (each container must stay running 2s before the"
info "try succeeds), which compose does not do"
