#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine, as root.
#
#   scripts/test.sh [EXTRA CARGO TEST ARGS...]
#
# Steps:
#   1. install the missing Debian packages (docker.io, docker-registry,
#      busybox-static, iproute2, apache2-utils, curl, shellcheck, and for
#      the dashboard's browser test chromium, nodejs, npm), then the
#      browser driver playwright-core into tests/ui/node_modules (npm ci,
#      pinned by tests/ui/package-lock.json)
#   2. start dockerd unless a Docker engine already answers
#   3. start two local registries (Debian's docker-registry, run as plain
#      processes): open on 127.0.0.1:5000, htpasswd auth on 127.0.0.1:5001
#   4. build and push the test images (scripts/test-images.sh), then run a
#      container from the auth registry with a published port as a smoke test
#   5. export SHOAL_TEST_* for the tests and write them to $STATE_DIR/env
#      (`source /tmp/shoal-test-env/env` to run single tests by hand)
#   6. cargo fmt --check, cargo clippy -D warnings, cargo test --workspace
#   7. scripts/fuzz.sh 5: every fuzz target of fuzz/ for 5 s on its
#      committed corpus, so an input that used to be handled and now panics
#      fails the run (the first run builds the instrumented targets)
#   8. scripts/test-install.sh: scripts/install.sh run for real in a
#      throwaway container root, with the binary cargo built
#
# Environment:
#   SHOAL_TEST_ENV_ONLY=1   do steps 1-5 and stop before cargo.
#   SHOAL_TEST_NO_DOCKER=1  for developers only, never for CI: skip steps 1-5
#                           (no packages, Docker, registries or images) and 8;
#                           tests that need them skip themselves. Refused when
#                           CI=true.
#   SHOAL_TEST_STATE_DIR    state dir (default /tmp/shoal-test-env): logs,
#                           registry data, the generated password, the env file.
#
# If the Docker engine cannot be started this script fails: tests that need
# Docker must never be skipped silently in CI.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

total_start=$(now)

# ---------------------------------------------------------------- step 1
install_packages() {
    section "1/8 Debian packages"
    local -a missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    [[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true) == "install ok installed" ]] ||
        missing+=(busybox-static)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)

    if ((${#missing[@]} == 0)); then
        info "all present"
        return
    fi
    ((EUID == 0)) || die "missing packages (${missing[*]}) and not root: install them or run as root"
    info "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The driver of tests/tests/ui.rs's browser (Chromium itself is Debian's).
install_browser_driver() {
    local dir=$repo_root/tests/ui
    if [[ -d $dir/node_modules/playwright-core && $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]]; then
        info "playwright-core present in tests/ui"
        return
    fi
    info "npm ci in tests/ui (playwright-core)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

# ---------------------------------------------------------------- step 2
# dockerd flag sets, tried in order until the engine answers. The first is
# the normal way; the later ones are for kernels or sandboxes without
# overlayfs or iptables. The last one has no bridge, so it cannot publish
# ports: a warning says so.
dockerd_attempts=(
    ""
    "--storage-driver=vfs"
    "--storage-driver=vfs --iptables=false --ip-masq=false"
    "--storage-driver=vfs --iptables=false --ip-masq=false --bridge=none"
)

# show_dockerd_errors LOG: the error lines of the last dockerd attempt.
show_dockerd_errors() {
    local attempt errors
    attempt=$(awk '/^---- / { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$1")
    errors=$(grep -E 'level=(error|fatal)|^failed|Error starting|error initializing' <<<"$attempt" || true)
    [[ -n $errors ]] || errors=$(tail -n 8 <<<"$attempt")
    tail -n 8 <<<"$errors" | sed 's/^/    | /'
}

start_dockerd() {
    section "2/8 Docker engine"
    if docker_answers; then
        info "Docker engine already answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        return
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found (package docker.io)"
    ((EUID == 0)) || die "the Docker engine does not answer and starting dockerd needs root"

    # A dockerd that is still starting (by systemd or a previous run): give it time.
    if pid_alive /var/run/docker.pid dockerd; then
        info "dockerd (pid $(</var/run/docker.pid)) is running but not answering yet; waiting"
        if wait_for 60 "the running dockerd" docker_answers; then
            info "Docker engine answers"
            return
        fi
        die "dockerd (pid $(</var/run/docker.pid)) runs but 'docker info' does not answer; see its log"
    fi

    local log=$SHOAL_STATE_DIR/dockerd.log flags pid deadline
    local -a args
    for flags in "${dockerd_attempts[@]}"; do
        read -r -a args <<<"$flags"
        info "starting dockerd ${flags:-(default flags)}; log: $log"
        printf '\n---- %s: dockerd %s\n' "$(date -Is)" "$flags" >>"$log"
        setsid dockerd "${args[@]}" >>"$log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$SHOAL_STATE_DIR/dockerd.pid"
        deadline=$((SECONDS + 60))
        while :; do
            if docker_answers; then
                printf '%s\n' "$flags" >"$SHOAL_STATE_DIR/dockerd.flags"
                info "Docker engine answers (dockerd pid $pid, flags: ${flags:-default})"
                return
            fi
            if ! kill -0 "$pid" 2>/dev/null; then
                info "dockerd exited:"
                break
            fi
            if ((SECONDS >= deadline)); then
                info "dockerd did not answer within 60s; stopping it:"
                kill -TERM -- "-$pid" 2>/dev/null || true
                wait_for 20 "dockerd to stop" bash -c "! kill -0 $pid 2>/dev/null" ||
                    kill -KILL -- "-$pid" 2>/dev/null || true
                break
            fi
            sleep 0.5
        done
        wait "$pid" 2>/dev/null || true
        show_dockerd_errors "$log"
    done
    rm -f "$SHOAL_STATE_DIR/dockerd.pid"
    die "could not start the Docker engine with any flag set; see $log"
}

# ---------------------------------------------------------------- step 3
# write_registry_config NAME ADDR [HTPASSWD]
write_registry_config() {
    local name=$1 addr=$2 htpasswd_file=${3:-}
    local dir=$SHOAL_STATE_DIR/registry-$name
    mkdir -p "$dir/data"
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: info"
        echo "  fields:"
        echo "    service: shoal-test-registry-$name"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $dir/data"
        echo "  delete:"
        echo "    enabled: true"
        echo "  cache:"
        echo "    blobdescriptor: inmemory"
        echo "http:"
        echo "  addr: $addr"
        echo "  secret: shoal-test-$name"
        echo "  headers:"
        echo "    X-Content-Type-Options: [nosniff]"
        if [[ -n $htpasswd_file ]]; then
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: shoal-test"
            echo "    path: $htpasswd_file"
        fi
    } >"$dir/config.yml"
}

registry_answers() {
    [[ $(http_code "http://$1/v2/") == "$2" ]]
}

# stop_our_registry NAME: stop the registry this script started, if alive.
stop_our_registry() {
    local pidfile=$SHOAL_STATE_DIR/registry-$1/pid pid
    pid_alive "$pidfile" docker-registry || return 0
    pid=$(<"$pidfile")
    info "stopping our $1 registry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_for 10 "registry pid $pid to stop" bash -c "! kill -0 $pid 2>/dev/null" ||
        kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# ensure_registry NAME ADDR EXPECTED_CODE [HTPASSWD]
ensure_registry() {
    local name=$1 addr=$2 want=$3 htpasswd_file=${4:-}
    local dir=$SHOAL_STATE_DIR/registry-$name log=$SHOAL_STATE_DIR/registry-$name.log code
    code=$(http_code "http://$addr/v2/")
    if [[ $code == "$want" ]]; then
        info "$name registry answers on $addr (/v2/ -> $code)"
        return
    fi
    if [[ $code != 000 ]]; then
        if pid_alive "$dir/pid" docker-registry; then
            stop_our_registry "$name"
        elif [[ $name == open ]] && command -v systemctl >/dev/null 2>&1 &&
            systemctl is-active --quiet docker-registry 2>/dev/null; then
            # Debian's docker-registry package starts a service on :5000.
            info "stopping the docker-registry system service, which holds $addr"
            systemctl stop docker-registry
        else
            die "$addr answers /v2/ with HTTP $code, expected $want: something else listens there"
        fi
    fi
    write_registry_config "$name" "$addr" "$htpasswd_file"
    info "starting $name registry on $addr; log: $log"
    printf '\n---- %s: docker-registry serve %s\n' "$(date -Is)" "$dir/config.yml" >>"$log"
    setsid docker-registry serve "$dir/config.yml" >>"$log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    if ! wait_for 30 "$name registry on $addr" registry_answers "$addr" "$want"; then
        tail -n 15 "$log" | sed 's/^/    | /'
        die "$name registry did not answer on http://$addr/v2/ with HTTP $want"
    fi
    info "$name registry answers on $addr (/v2/ -> $want)"
}

start_registries() {
    section "3/8 registries"
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry not found (package docker-registry)"
    ensure_registry open "$SHOAL_REGISTRY_ADDR" 200

    local dir=$SHOAL_STATE_DIR/registry-auth pw
    mkdir -p "$dir"
    if [[ ! -s $dir/password ]]; then
        pw=$(head -c 48 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
        (umask 077 && printf '%s\n' "${pw:0:24}" >"$dir/password")
    fi
    SHOAL_TEST_REGISTRY_PASSWORD=$(<"$dir/password")
    if ! htpasswd -v -i "$dir/htpasswd" "$SHOAL_REGISTRY_USER" \
        <<<"$SHOAL_TEST_REGISTRY_PASSWORD" >/dev/null 2>&1; then
        rm -f "$dir/htpasswd"
        (umask 077 && htpasswd -B -i -c "$dir/htpasswd" "$SHOAL_REGISTRY_USER" \
            <<<"$SHOAL_TEST_REGISTRY_PASSWORD" 2>/dev/null)
    fi
    ensure_registry auth "$SHOAL_AUTH_REGISTRY_ADDR" 401 "$dir/htpasswd"

    local code
    code=$(http_code "http://$SHOAL_AUTH_REGISTRY_ADDR/v2/" -u "$SHOAL_REGISTRY_USER:$SHOAL_TEST_REGISTRY_PASSWORD")
    if [[ $code != 200 ]]; then
        if pid_alive "$dir/pid" docker-registry; then
            info "auth registry rejects the stored password; restarting it"
            stop_our_registry auth
            ensure_registry auth "$SHOAL_AUTH_REGISTRY_ADDR" 401 "$dir/htpasswd"
            code=$(http_code "http://$SHOAL_AUTH_REGISTRY_ADDR/v2/" -u "$SHOAL_REGISTRY_USER:$SHOAL_TEST_REGISTRY_PASSWORD")
        fi
        [[ $code == 200 ]] || die "auth registry on $SHOAL_AUTH_REGISTRY_ADDR rejects user $SHOAL_REGISTRY_USER" \
            "with the password in $dir/password (HTTP $code); stop that registry and run again"
    fi
    info "auth registry accepts $SHOAL_REGISTRY_USER with the password in $dir/password"
}

# ---------------------------------------------------------------- step 4
smoke_test() {
    local ref=$SHOAL_AUTH_REGISTRY_ADDR/shoal-test/httpd:1.0
    local name=shoal-test-smoke-$$ addr body
    docker_login_auth_registry
    docker --config "$SHOAL_DOCKER_CONFIG" pull -q "$ref" >/dev/null ||
        die "smoke test: cannot pull $ref"

    if [[ $(cat "$SHOAL_STATE_DIR/dockerd.flags" 2>/dev/null || true) == *--bridge=none* ]]; then
        warn "dockerd runs with --bridge=none: containers cannot publish ports; tests that need it will fail"
        docker run --rm "$ref" true || die "smoke test: cannot run a container from $ref"
    else
        docker run -d --name "$name" -p 127.0.0.1::8080 "$ref" >/dev/null ||
            die "smoke test: cannot run a container from $ref with a published port"
        addr=$(docker port "$name" 8080/tcp | head -n 1)
        if ! wait_for 15 "httpd on $addr" curl -fsS -m 2 -o /dev/null "http://$addr/"; then
            docker logs "$name" 2>&1 | tail -n 5 | sed 's/^/    | /'
            docker rm -f "$name" >/dev/null 2>&1 || true
            die "smoke test: the httpd container does not answer on published port $addr"
        fi
        body=$(curl -fsS -m 2 "http://$addr/")
        docker rm -f "$name" >/dev/null
        info "container from $ref answered on published port $addr: $body"
    fi
    docker rmi "$ref" >/dev/null 2>&1 || true
}

build_images() {
    section "4/8 test images"
    export SHOAL_TEST_REGISTRY=$SHOAL_REGISTRY_ADDR
    export SHOAL_TEST_AUTH_REGISTRY=$SHOAL_AUTH_REGISTRY_ADDR
    export SHOAL_TEST_REGISTRY_USER=$SHOAL_REGISTRY_USER
    export SHOAL_TEST_REGISTRY_PASSWORD
    "$here/test-images.sh"
    smoke_test
}

# ---------------------------------------------------------------- step 5
write_env() {
    section "5/8 test environment"
    export SHOAL_TEST_DOCKER=1
    export SHOAL_TEST_REGISTRY=$SHOAL_REGISTRY_ADDR
    export SHOAL_TEST_AUTH_REGISTRY=$SHOAL_AUTH_REGISTRY_ADDR
    export SHOAL_TEST_REGISTRY_USER=$SHOAL_REGISTRY_USER
    export SHOAL_TEST_REGISTRY_PASSWORD
    local var tmp=$SHOAL_STATE_DIR/env.tmp
    rm -f "$tmp"
    (umask 077 && : >"$tmp")
    for var in SHOAL_TEST_DOCKER SHOAL_TEST_REGISTRY SHOAL_TEST_AUTH_REGISTRY \
        SHOAL_TEST_REGISTRY_USER SHOAL_TEST_REGISTRY_PASSWORD; do
        printf 'export %s=%q\n' "$var" "${!var}"
    done >>"$tmp"
    mv "$tmp" "$SHOAL_STATE_DIR/env"
    for var in SHOAL_TEST_DOCKER SHOAL_TEST_REGISTRY SHOAL_TEST_AUTH_REGISTRY SHOAL_TEST_REGISTRY_USER; do
        info "$var=${!var}"
    done
    info "SHOAL_TEST_REGISTRY_PASSWORD=(in $SHOAL_STATE_DIR/env)"
}

# ---------------------------------------------------------------- main
timed() {
    local start
    start=$(now)
    "$@"
    info "($1: $(elapsed "$start")s)"
}

if [[ ${SHOAL_TEST_NO_DOCKER:-} == 1 ]]; then
    [[ ${CI:-} != true ]] || die "SHOAL_TEST_NO_DOCKER=1 is for developers only; CI must run the Docker tests"
    section "1-5/8 test environment skipped (SHOAL_TEST_NO_DOCKER=1)"
    info "tests that need Docker or the registries will be skipped"
    unset SHOAL_TEST_DOCKER SHOAL_TEST_REGISTRY SHOAL_TEST_AUTH_REGISTRY \
        SHOAL_TEST_REGISTRY_USER SHOAL_TEST_REGISTRY_PASSWORD
else
    mkdir -p "$SHOAL_STATE_DIR"
    chmod 700 "$SHOAL_STATE_DIR" 2>/dev/null || true
    timed install_packages
    timed install_browser_driver
    timed start_dockerd
    timed start_registries
    timed build_images
    write_env
    info "environment ready in $(elapsed "$total_start")s"
    # Everything the tests need is set up: a test that would skip for lack
    # of it (Docker, the registries, the browser, network namespaces) fails
    # instead, as in CI.
    export CI=${CI:-true}
fi

if [[ ${SHOAL_TEST_ENV_ONLY:-} == 1 ]]; then
    section "stopping before cargo (SHOAL_TEST_ENV_ONLY=1)"
    exit 0
fi

cd "$repo_root"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi

section "6/8 cargo fmt --all --check"
cargo fmt --all --check
# fuzz/ is its own workspace.
cargo fmt --all --check --manifest-path fuzz/Cargo.toml

section "6/8 cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "6/8 cargo test --workspace $*"
cargo test --workspace "$@"

section "7/8 scripts/fuzz.sh 5"
"$here/fuzz.sh" 5

if [[ ${SHOAL_TEST_NO_DOCKER:-} == 1 ]]; then
    section "8/8 scripts/test-install.sh skipped (SHOAL_TEST_NO_DOCKER=1: it needs Docker)"
else
    section "8/8 scripts/test-install.sh"
    cargo build -q -p shoal --bin shoal
    "$here/test-install.sh"
fi

section "all done in $(elapsed "$total_start")s"
