# Shared helpers for scripts/test.sh and scripts/test-images.sh.
# Source it; it defines functions and variables only.
# shellcheck shell=bash disable=SC2034

# Where the test environment keeps its logs, registry data, generated
# password and the env file. Developers can `source "$SHOAL_STATE_DIR/env"`.
SHOAL_STATE_DIR=${SHOAL_TEST_STATE_DIR:-/tmp/shoal-test-env}

SHOAL_REGISTRY_ADDR=127.0.0.1:5000
SHOAL_AUTH_REGISTRY_ADDR=127.0.0.1:5001
SHOAL_REGISTRY_USER=shoal

section() {
    printf '\n==== %s ====\n' "$*"
}

info() {
    printf '  %s\n' "$*"
}

warn() {
    printf 'WARNING: %s\n' "$*" >&2
}

die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

# Seconds since the epoch, with a fractional part, for step timings.
now() {
    date +%s.%N
}

# elapsed START: seconds since START (from `now`), one decimal.
elapsed() {
    awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND every half second
# until it succeeds or SECONDS have passed. Returns 1 on timeout.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            warn "timed out after ${timeout}s waiting for ${what}"
            return 1
        fi
        sleep 0.5
    done
}

# http_code URL [CURL ARGS...]: print the HTTP status code of a GET on URL,
# or 000 when nothing answers. Never fails.
http_code() {
    local url=$1
    shift
    curl -s -o /dev/null -m 5 -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

# docker_answers: true when the Docker engine answers.
docker_answers() {
    timeout 20 docker info >/dev/null 2>&1
}

# pid_alive PIDFILE NAME: true when PIDFILE holds the pid of a live process
# whose command line contains NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$name"* ]]
}

# load_state_env: read the registry settings written by scripts/test.sh
# when they are not already in the environment.
load_state_env() {
    if [[ -z ${SHOAL_TEST_REGISTRY_PASSWORD:-} && -r $SHOAL_STATE_DIR/env ]]; then
        # shellcheck source=/dev/null
        source "$SHOAL_STATE_DIR/env"
    fi
}

# Docker client config dir used to log in to the auth registry, so that the
# user's own ~/.docker/config.json is left alone.
SHOAL_DOCKER_CONFIG=$SHOAL_STATE_DIR/docker-config

# docker_login_auth_registry: log in to the auth registry in SHOAL_DOCKER_CONFIG.
docker_login_auth_registry() {
    local registry=${SHOAL_TEST_AUTH_REGISTRY:-$SHOAL_AUTH_REGISTRY_ADDR}
    local user=${SHOAL_TEST_REGISTRY_USER:-$SHOAL_REGISTRY_USER} out
    [[ -n ${SHOAL_TEST_REGISTRY_PASSWORD:-} ]] || die "SHOAL_TEST_REGISTRY_PASSWORD is not set"
    mkdir -p "$SHOAL_DOCKER_CONFIG"
    chmod 700 "$SHOAL_DOCKER_CONFIG"
    if ! out=$(printf '%s' "$SHOAL_TEST_REGISTRY_PASSWORD" |
        docker --config "$SHOAL_DOCKER_CONFIG" login -u "$user" --password-stdin "$registry" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    | /' >&2
        die "docker login to $registry as $user failed"
    fi
}
