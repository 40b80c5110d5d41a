#!/usr/bin/env bash
# Tests scripts/install.sh for real, in a throwaway root: a container on the
# local Docker engine, made from this machine's own files.
#
#   scripts/test-install.sh
#
# The container's image holds the tools the installer uses (dash, coreutils,
# the shadow tools, runuser, curl, systemd-analyze, busybox when present),
# their libraries, PAM and /etc, copied from this machine with `tar` and
# loaded with `docker import`. It is tagged with a hash of the copied files'
# names, sizes and mtimes, so it is built once and rebuilt only when they
# change. The container runs with --network none and no systemd: a stub
# `systemctl` on PATH logs its calls and keeps the unit's state in files, and
# a stub `shoal` logs its calls to test joining. The real binary
# (target/debug/shoal) is installed when it exists, a stand-in otherwise.
#
# What it checks: shellcheck -s sh; --help and usage errors; refusal without
# root; a wrong checksum refuses and leaves the tree untouched; --dry-run
# changes nothing (and prints the same under busybox sh); the installed
# files, modes, owners, user and unit; systemd-analyze verify of the unit; a
# second run changes nothing (same listing with mtimes, ctimes and checksums)
# and restarts nothing; a change of settings (env vars) or binary (file://
# URL) rewrites and restarts; joining with a ticket as user shoal and the
# bounded wait; without systemctl, the printed manual commands (run for
# real); --uninstall leaves the tree as before (the data dir excepted) and
# --purge removes the data dir too; --root installs into another tree.
#
# Needs a Docker engine that answers (scripts/test.sh starts one) and
# the shellcheck tool (Debian package shellcheck). Exits 1 when a check fails.
# shellcheck source-path=SCRIPTDIR disable=SC2016  # code run in the container is single-quoted
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

# Bump when the image recipe below changes.
IMAGE_RECIPE=1
IMAGE_REPO=shoal-test-installroot
CT=shoal-test-install-$$
HOST=shoal-test-node
CT_PATH=/t/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CT_PATH_NO_SYSTEMCTL=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

start=$(now)
failures=0
checks=0
runs=()
work=$(mktemp -d /tmp/shoal-test-install.XXXXXX)

cleanup() {
    docker rm -f "$CT" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

pass() {
    checks=$((checks + 1))
    printf '  ok    %s\n' "$*"
}

fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    printf '  FAIL  %s\n' "$*" >&2
}

# check DESCRIPTION COMMAND...: pass when COMMAND succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# show FILE: prints FILE indented, for the context of a failure.
show() {
    sed 's/^/        | /' "$1" >&2
}

# ---------------------------------------------------------------- the image

# The tools the installer and this test use inside the container.
required_tools=(
    sh dash bash cat chmod chown cp cut date dirname basename env id install ln ls mkdir
    mktemp mv readlink realpath rm rmdir sha256sum sleep sort stat tail head tee timeout
    touch tr true false uname wc printf expr find xargs grep sed awk cmp diff
    useradd usermod userdel groupadd groupdel gpasswd getent runuser su nologin
)
optional_tools=(busybox setpriv curl systemd-analyze)

declare -A seen=()
paths=()

# add_path PATH: adds PATH to the image, under its canonical directory; a
# symlink brings its targets along.
add_path() {
    local p=$1 dir target
    while :; do
        dir=$(realpath -e "$(dirname "$p")" 2>/dev/null) || return 0
        p=${dir%/}/$(basename "$p")
        [[ -e $p || -L $p ]] || return 0
        [[ -n ${seen[$p]:-} ]] && return 0
        seen[$p]=1
        paths+=("${p#/}")
        [[ -L $p ]] || return 0
        target=$(readlink "$p")
        [[ $target == /* ]] || target=$dir/$target
        p=$target
    done
}

# add_libs FILE: adds the shared libraries FILE needs.
add_libs() {
    local lib
    while read -r lib; do
        add_path "$lib"
    done < <(ldd "$1" 2>/dev/null | grep -oE '(^|[[:space:]])/[^[:space:]]+' | sed 's/^[[:space:]]*//' || true)
}

# add_tree DIR [FIND ARGS...]: adds DIR and everything in it (symlinks as
# they are); the libraries of the shared objects in it too.
add_tree() {
    local d entry
    d=$(realpath -e "$1" 2>/dev/null) || return 0
    shift
    while IFS= read -r -d '' entry; do
        [[ -n ${seen[$entry]:-} ]] && continue
        seen[$entry]=1
        paths+=("${entry#/}")
        if [[ $entry == *.so && -f $entry && ! -L $entry ]]; then add_libs "$entry"; fi
    done < <(find "$d" -xdev "$@" -print0)
}

collect_image_files() {
    local tool p dir
    # Top-level symlinks of a merged /usr (bin -> usr/bin, ...).
    for dir in bin sbin lib lib32 lib64 libx32; do
        if [[ -L /$dir ]]; then add_path "/$dir"; fi
    done
    for tool in "${required_tools[@]}"; do
        p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$tool") ||
            die "$tool is needed to build the test root and is not installed"
        add_path "$p"
        add_libs "$(realpath "$p")"
    done
    for tool in "${optional_tools[@]}"; do
        if p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$tool"); then
            add_path "$p"
            add_libs "$(realpath "$p")"
        fi
    done
    if [[ -x $repo_root/target/debug/shoal ]]; then add_libs "$repo_root/target/debug/shoal"; fi
    # PAM (runuser, su), systemd's unit directory (systemd-analyze verify).
    for dir in /usr/lib/*-linux-gnu*/security /lib/*-linux-gnu*/security /usr/lib/security; do
        if [[ -d $dir ]]; then add_tree "$dir"; fi
    done
    if [[ -d /usr/lib/systemd/system ]]; then add_tree /usr/lib/systemd/system; fi
    # /etc, but for keys and any shoal of this machine's own.
    add_tree /etc \( -path /etc/ssh -o -path /etc/ssl/private -o -path /etc/shoal \
        -o -name 'shoal.service' \) -prune -o
}

build_image() {
    section "install test: the throwaway root"
    collect_image_files
    local list=$work/image-files hash stage
    printf '%s\n' "${paths[@]}" | sort -u >"$list"
    hash=$( {
        echo "recipe $IMAGE_RECIPE"
        (cd / && xargs -d '\n' stat -c '%n %s %Y %a' <"$list")
    } | sha256sum | cut -c1-16)
    IMAGE=$IMAGE_REPO:$hash
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then
        info "image $IMAGE is cached ($(wc -l <"$list") files)"
        return
    fi
    info "building $IMAGE from $(wc -l <"$list") files of this machine"
    stage=$work/stage
    mkdir -p "$stage"
    tar -C / --no-recursion -cf - -T "$list" | tar -C "$stage" -xpf -
    # No password hashes of this machine in the image.
    for f in shadow gshadow shadow- gshadow-; do
        if [[ -f $stage/etc/$f ]]; then
            awk -F: -v OFS=: '$2 != "" { $2 = "*" } 1' "$stage/etc/$f" >"$work/$f"
            cat "$work/$f" >"$stage/etc/$f"
        fi
    done
    rm -f "$stage/etc/systemd/system/multi-user.target.wants/shoal.service"
    mkdir -p "$stage"/{tmp,var/tmp,run,root,proc,sys,dev,var/lib,usr/local/bin,usr/local/sbin}
    chmod 1777 "$stage/tmp" "$stage/var/tmp"
    chmod 700 "$stage/root"
    tar -C "$stage" -cf - . | docker import - "$IMAGE" >/dev/null
    rm -rf "$stage"
    local old
    while read -r old; do
        [[ $old == "$IMAGE" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done < <(docker images "$IMAGE_REPO" --format '{{.Repository}}:{{.Tag}}')
    info "built $IMAGE"
}

# ---------------------------------------------------------------- payload

write_payload() {
    local p=$work/payload
    mkdir -p "$p/bin" "$p/log" "$p/state"
    chmod 755 "$p"
    chmod 777 "$p/log"
    cp "$repo_root/scripts/install.sh" "$p/install.sh"
    if [[ -x $repo_root/target/debug/shoal ]]; then
        cp "$repo_root/target/debug/shoal" "$p/shoal"
        REAL_BINARY=1
        info "binary: target/debug/shoal"
    else
        printf '#!/bin/sh\necho "shoal stand-in $*"\n' >"$p/shoal"
        REAL_BINARY=0
        info "binary: a stand-in (target/debug/shoal is not built)"
    fi
    chmod 755 "$p/shoal"
    # A second, different binary.
    { cat "$p/shoal" && printf '\n# another build\n'; } >"$p/shoal2"
    chmod 755 "$p/shoal2"

    # systemctl stand-in: logs every call, keeps the unit's state in files.
    cat >"$p/bin/systemctl" <<'EOF'
#!/bin/sh
echo "$*" >>/t/log/systemctl.log
state=/t/state
now=0
verb=
for a in "$@"; do
    case $a in
    --now) now=1 ;;
    -*) ;;
    *) [ -n "$verb" ] || verb=$a ;;
    esac
done
case $verb in
is-active) test -e $state/active ;;
is-enabled) test -e $state/enabled ;;
daemon-reload) exit 0 ;;
enable)
    touch $state/enabled
    if [ $now = 1 ]; then touch $state/active; fi
    ;;
disable)
    rm -f $state/enabled
    if [ $now = 1 ]; then rm -f $state/active; fi
    ;;
start | restart) touch $state/active ;;
stop) rm -f $state/active ;;
*)
    echo "stub systemctl: $verb is not supported" >&2
    exit 1
    ;;
esac
EOF
    # shoal stand-in for joining: logs who runs it and how. `team list`
    # fails twice before answering (the installer must wait), or always
    # when /t/log/daemon-down exists.
    cat >"$p/stub-shoal" <<'EOF'
#!/bin/sh
echo "$(id -un) HOME=$HOME $*" >>/t/log/shoal.log
case "$*" in
*" team list"*)
    [ ! -e /t/log/daemon-down ] || exit 1
    n=$(cat /t/log/team-list-count 2>/dev/null || echo 0)
    echo $((n + 1)) >/t/log/team-list-count
    [ "$n" -ge 2 ] || exit 1
    echo "NAME  ID  OPS"
    ;;
*" node list"*) echo "NAME             STATUS" && echo "shoal-test-node  connected" ;;
*" node join "*) echo "joined" ;;
esac
exit 0
EOF
    chmod 755 "$p/bin/systemctl" "$p/stub-shoal"
    # docker stand-in: `docker info` answers (runtime detection).
    mkdir -p "$p/docker-bin"
    printf '#!/bin/sh\nexit 0\n' >"$p/docker-bin/docker"
    chmod 755 "$p/docker-bin/docker"
    SHA=$(sha256sum "$p/shoal" | cut -d' ' -f1)
    SHA2=$(sha256sum "$p/shoal2" | cut -d' ' -f1)
    SHA_STUB=$(sha256sum "$p/stub-shoal" | cut -d' ' -f1)
}

start_container() {
    docker create --name "$CT" --network none --hostname "$HOST" "$IMAGE" /usr/bin/sleep infinity >/dev/null
    docker cp "$work/payload/." "$CT:/t/" >/dev/null
    docker start "$CT" >/dev/null
    # systemd "runs" (the stub answers); group docker exists.
    ct sh -c 'mkdir -p /run/systemd/system && { getent group docker >/dev/null || groupadd --system docker; }'
    # The container's overlay filesystem copies a directory up on its first
    # change, which changes its parent's ctime: change once every directory
    # the installer writes to, before the first listing.
    ct sh -c 'for d in /tmp /etc /etc/systemd/system /usr/local/bin /var/lib /run; do
        touch "$d/.shoal-test" && rm "$d/.shoal-test"; done'
}

# ---------------------------------------------------------------- in the container

ct() {
    docker exec -i "$CT" "$@"
}

# snapshot: every path with type, mode, owner, size, mtime, ctime and link
# target, plus the checksum of every regular file outside /usr (the whole
# state an install can touch). /t (this test's payload and logs), /tmp and
# /altroot (the --root test) are left out.
snapshot() {
    ct bash -c '
        prune="-path /proc -o -path /sys -o -path /dev -o -path /t -o -path /tmp -o -path /altroot"
        find / -xdev \( $prune \) -prune -o -printf "%p %y %m %U %G %s %T@ %C@ %l\n" | sort
        find / -xdev \( $prune -o -path /usr \) -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
        find /usr/local -xdev -type f -print0 | sort -z | xargs -0 -r sha256sum'
}

# content_snapshot: paths, types, modes, owners, sizes and checksums, no
# times: what must be back as before after --uninstall. Left out too: the
# backups and the lock file the shadow tools keep (/etc/passwd- ...,
# /etc/.pwd.lock), and the sizes of directories.
content_snapshot() {
    ct bash -c '
        prune="-path /proc -o -path /sys -o -path /dev -o -path /t -o -path /tmp -o -path /altroot"
        skip="-path /etc/passwd- -o -path /etc/group- -o -path /etc/shadow- -o -path /etc/gshadow- -o -path /etc/.pwd.lock"
        find / -xdev \( $prune \) -prune -o \( $skip \) -o \
            \( -type f -printf "%p f %m %U %G %s\n" -o -printf "%p %y %m %U %G %l\n" \) | sort
        find / -xdev \( $prune -o -path /usr \) -prune -o \( $skip \) -o -type f -print0 |
            sort -z | xargs -0 sha256sum
        find /usr/local -xdev -type f -print0 | sort -z | xargs -0 -r sha256sum'
}

# same_snapshot NAME BEFORE AFTER: the two listings are equal.
same_snapshot() {
    local what=$1
    if diff -u "$2" "$3" >"$work/snapdiff"; then
        pass "$what"
    else
        fail "$what; the differences:"
        head -n 40 "$work/snapdiff" | show_stdin
    fi
}

show_stdin() {
    sed 's/^/        | /' >&2
}

# inst NAME RC [env VAR=VALUE... --] ARGS...: runs the installer in the
# container (PATH with the systemctl stand-in) and checks its exit code.
# Output in $work/NAME.out; the systemctl calls it made in $work/NAME.sysctl.
inst() {
    inst_with "$CT_PATH" sh "$@"
}

# inst_with PATH SHELL NAME RC [VAR=VALUE...] [--] ARGS...: SHELL may be
# several words ("busybox sh").
inst_with() {
    local path=$1 name=$3 want=$4 rc=0 before
    local -a shell
    read -r -a shell <<<"$2"
    shift 4
    local -a envs=()
    while [[ $# -gt 0 && $1 == *=* && $1 != --* ]]; do
        envs+=("$1")
        shift
    done
    if [[ ${1:-} == -- ]]; then shift; fi
    runs+=("$name")
    before=$(ct sh -c 'cat /t/log/systemctl.log 2>/dev/null | wc -l')
    ct env -i PATH="$path" HOME=/root "${envs[@]}" "${shell[@]}" /t/install.sh "$@" >"$work/$name.out" 2>&1 || rc=$?
    ct sh -c "tail -n +$((before + 1)) /t/log/systemctl.log 2>/dev/null || true" >"$work/$name.sysctl"
    if [[ $rc == "$want" ]]; then
        pass "$name: exit code $rc"
    else
        fail "$name: exit code $rc, expected $want; its output:"
        show "$work/$name.out"
    fi
}

# out_has NAME TEXT: the output of run NAME contains TEXT.
out_has() {
    if grep -qF -- "$2" "$work/$1.out"; then
        pass "$1: prints '$2'"
    else
        fail "$1: does not print '$2'; its output:"
        show "$work/$1.out"
    fi
}

# out_lacks NAME TEXT
out_lacks() {
    if grep -qF -- "$2" "$work/$1.out"; then
        fail "$1: prints '$2'; its output:"
        show "$work/$1.out"
    else
        pass "$1: does not print '$2'"
    fi
}

# sysctl_is NAME CALL...: the systemctl calls of run NAME, in order.
sysctl_is() {
    local name=$1
    shift
    local want
    want=$(printf '%s\n' "$@")
    if [[ $(cat "$work/$name.sysctl") == "$want" ]]; then
        pass "$name: systemctl calls: $(paste -sd '|' "$work/$name.sysctl")"
    else
        fail "$name: systemctl calls were:"
        show "$work/$name.sysctl"
        printf '        expected:\n' >&2
        printf '%s\n' "$@" | show_stdin
    fi
}

# no_mutating_sysctl NAME: run NAME only asked systemctl questions.
no_mutating_sysctl() {
    if grep -vqE '^is-(active|enabled)( |$)' "$work/$1.sysctl"; then
        fail "$1: changed the service state:"
        show "$work/$1.sysctl"
    else
        pass "$1: systemctl only queried ($(paste -sd '|' "$work/$1.sysctl"))"
    fi
}

# ct_check DESCRIPTION SHELL-CODE: the code succeeds in the container.
ct_check() {
    if ct bash -c "$2" >"$work/ct_check.out" 2>&1; then
        pass "$1"
    else
        fail "$1"
        show "$work/ct_check.out"
    fi
}

# stat_is PATH "MODE UID:GID" or "MODE USER:GROUP"
stat_is() {
    local got
    got=$(ct stat -c '%a %U:%G' "$1" 2>&1 || true)
    if [[ $got == "$2" ]]; then pass "$1 is $2"; else fail "$1 is '$got', expected '$2'"; fi
}

# unit_has LINE...: the unit holds each LINE exactly.
unit_has() {
    local line
    ct cat /etc/systemd/system/shoal.service >"$work/unit" 2>&1 || true
    for line in "$@"; do
        if grep -qxF -- "$line" "$work/unit"; then
            pass "unit: $line"
        else
            fail "unit lacks '$line'; it is:"
            show "$work/unit"
        fi
    done
}

# ---------------------------------------------------------------- the tests

test_shellcheck() {
    section "install test: shellcheck"
    command -v shellcheck >/dev/null 2>&1 ||
        die "shellcheck is not installed: apt-get install shellcheck (scripts/test.sh installs it)"
    if shellcheck -s sh "$repo_root/scripts/install.sh" >"$work/shellcheck.out" 2>&1; then
        pass "shellcheck -s sh scripts/install.sh is clean"
    else
        fail "shellcheck -s sh scripts/install.sh:"
        show "$work/shellcheck.out"
    fi
    if shellcheck -x "$repo_root/scripts/test-install.sh" >"$work/shellcheck2.out" 2>&1; then
        pass "shellcheck scripts/test-install.sh is clean"
    else
        fail "shellcheck scripts/test-install.sh:"
        show "$work/shellcheck2.out"
    fi
    check "install.sh ends with main \"\$@\"" \
        test "$(tail -n 1 "$repo_root/scripts/install.sh")" = 'main "$@"'
}

test_usage() {
    section "install test: usage, root, checksum"
    inst help 0 --help
    out_has help "--uninstall"
    out_has help "--root DIR"
    inst bad-flag 2 --frobnicate
    out_has bad-flag "shoal-install: error: unknown argument: --frobnicate"
    inst bad-runtime 2 --runtime podman
    inst bad-sha 2 --binary /t/shoal --sha256 1234
    inst purge-alone 2 --purge
    inst no-binary 1
    out_has no-binary "pass --binary PATH or --binary URL"

    local rc=0
    docker exec -u 65534:65534 "$CT" env -i PATH="$CT_PATH" sh /t/install.sh --binary /t/shoal \
        >"$work/not-root.out" 2>&1 || rc=$?
    if [[ $rc == 1 ]] && grep -qF "must run as root" "$work/not-root.out"; then
        pass "not root and no sudo: refuses and says to run it as root"
    else
        fail "not root: exit code $rc; output:"
        show "$work/not-root.out"
    fi

    inst wrong-sha 1 --binary /t/shoal --sha256 "$(printf '0%.0s' {1..64})" --ticket T1
    out_has wrong-sha "checksum mismatch"
    out_has wrong-sha "nothing was installed"
    snapshot >"$work/s-wrong-sha"
    same_snapshot "wrong checksum: the tree is unchanged (mtimes, ctimes, checksums)" \
        "$work/s0" "$work/s-wrong-sha"
    check "wrong checksum: systemctl was not called" test ! -s "$work/wrong-sha.sysctl"

    inst uninstall-nothing 0 --uninstall
    out_has uninstall-nothing "nothing to remove"
    snapshot >"$work/s-un0"
    same_snapshot "uninstall of nothing changes nothing" "$work/s0" "$work/s-un0"
}

test_dry_run_fresh() {
    section "install test: --dry-run on a fresh machine"
    inst dry 0 --dry-run --binary /t/shoal --sha256 "$SHA" --ticket T1
    out_has dry "would write /usr/local/bin/shoal (mode 755)"
    out_has dry "would create the system user shoal"
    out_has dry "would write /etc/shoal/shoal.env (mode 600)"
    out_has dry "ExecStart=/usr/local/bin/shoal node run --data-dir /var/lib/shoal --runtime none --name $HOST"
    out_has dry "would enable and start shoal.service"
    out_has dry "node join <ticket>"
    out_has dry "dry run: nothing was changed"
    no_mutating_sysctl dry
    snapshot >"$work/s-dry"
    same_snapshot "--dry-run: the tree is unchanged" "$work/s0" "$work/s-dry"

    inst_with "/t/docker-bin:$CT_PATH" sh dry-docker 0 -- --dry-run --binary /t/shoal
    out_has dry-docker "runtime docker (a Docker engine answers)"
    out_has dry-docker "would add user shoal to group docker"

    # As in `curl -fsSL URL/install.sh | sh -s -- ARGS`.
    local rc=0
    ct env -i PATH="$CT_PATH" HOME=/root sh -s -- --dry-run --binary /t/shoal --sha256 "$SHA" --ticket T1 \
        <"$repo_root/scripts/install.sh" >"$work/dry-piped.out" 2>&1 || rc=$?
    if [[ $rc == 0 ]] && diff -u "$work/dry.out" "$work/dry-piped.out" >"$work/dry.diff"; then
        pass "piped to 'sh -s --': the dry run prints the same"
    else
        fail "piped to 'sh -s --': exit code $rc; differences:"
        show "$work/dry.diff"
    fi

    if ct sh -c "test -x /usr/bin/busybox"; then
        inst_with "$CT_PATH" "busybox sh" dry-busybox 0 -- --dry-run --binary /t/shoal --sha256 "$SHA" --ticket T1
        if diff -u "$work/dry.out" "$work/dry-busybox.out" >"$work/dry.diff"; then
            pass "busybox sh: the dry run prints the same as dash"
        else
            fail "busybox sh: the dry run differs from dash:"
            show "$work/dry.diff"
        fi
    else
        info "skipped: busybox sh (busybox is not installed on this machine)"
    fi
}

test_install() {
    section "install test: install"
    inst install 0 --binary /t/shoal --sha256 "$SHA"
    out_has install "binary sha256 $SHA verified"
    sysctl_is install "daemon-reload" "is-active --quiet shoal.service" \
        "is-enabled --quiet shoal.service" "enable --now shoal.service"

    stat_is /usr/local/bin/shoal "755 root:root"
    ct_check "the installed binary is the given one" "cmp /t/shoal /usr/local/bin/shoal"
    if [[ $REAL_BINARY == 1 ]]; then
        ct_check "the installed binary runs (shoal --version)" "/usr/local/bin/shoal --version"
    fi
    ct_check "user shoal: system user, home /var/lib/shoal, no login shell" \
        'IFS=: read -r n _ uid _ _ home shell < <(getent passwd shoal) &&
         [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/shoal ] && [ "${shell##*/}" = nologin ]'
    ct_check "user shoal: not in group docker with runtime none" '! id -nG shoal | grep -qw docker'
    stat_is /var/lib/shoal "700 shoal:shoal"
    stat_is /etc/shoal/shoal.env "600 root:root"
    stat_is /etc/systemd/system/shoal.service "644 root:root"
    ct_check "env file: its four settings" '
        grep -qx SHOAL_DATA_DIR=/var/lib/shoal /etc/shoal/shoal.env &&
        grep -qx SHOAL_RUNTIME=none /etc/shoal/shoal.env &&
        grep -qx SHOAL_NODE_NAME='"$HOST"' /etc/shoal/shoal.env &&
        grep -qx SHOAL_SOCKET=/run/shoal/shoal.sock /etc/shoal/shoal.env'
    unit_has "After=network-online.target docker.service" "Wants=network-online.target" \
        "User=shoal" "EnvironmentFile=/etc/shoal/shoal.env" \
        "ExecStart=/usr/local/bin/shoal node run --data-dir /var/lib/shoal --runtime none --name $HOST" \
        "RuntimeDirectory=shoal" "Restart=always" "RestartSec=2" "NoNewPrivileges=yes" \
        "ProtectSystem=strict" "ReadWritePaths=/var/lib/shoal" "WantedBy=multi-user.target"
    ct_check "no temporary files left behind" \
        '! ls -A /usr/local/bin /etc/shoal /etc/systemd/system | grep -q "\.new\." &&
         ! ls /tmp | grep -q shoal-install'

    if ct sh -c "test -x /usr/bin/systemd-analyze"; then
        # systemd-analyze leaves a marker in /run/systemd: not the installer's.
        if ct sh -c 'systemd-analyze verify /etc/systemd/system/shoal.service 2>&1;
                rc=$?; rm -f /run/systemd/systemd-units-load; exit $rc' >"$work/verify.out" &&
            [[ ! -s $work/verify.out ]]; then
            pass "systemd-analyze verify: the unit is clean"
        else
            fail "systemd-analyze verify of the unit:"
            show "$work/verify.out"
        fi
        # The control: the same check finds a broken copy of the unit.
        if ct sh -c 'sed "s/^Restart=always/Restart=sometimes/" /etc/systemd/system/shoal.service \
                >/tmp/shoal-broken.service && systemd-analyze verify /tmp/shoal-broken.service 2>&1;
                rm -f /tmp/shoal-broken.service /run/systemd/systemd-units-load' >"$work/verify-bad.out" &&
            grep -qi "restart" "$work/verify-bad.out"; then
            pass "systemd-analyze verify: finds the error in a broken copy (the check works here)"
        else
            fail "systemd-analyze verify does not find a bad Restart= value:"
            show "$work/verify-bad.out"
        fi
    else
        info "skipped: systemd-analyze verify (systemd-analyze is not installed on this machine)"
    fi
}

test_idempotent() {
    section "install test: idempotence"
    snapshot >"$work/s1"
    inst again 0 --binary /t/shoal --sha256 "$SHA"
    snapshot >"$work/s2"
    same_snapshot "second run: the tree is unchanged (mtimes, ctimes, checksums)" "$work/s1" "$work/s2"
    no_mutating_sysctl again
    out_has again "nothing written"
    out_has again "not restarted"

    inst again-noflags 0
    snapshot >"$work/s3"
    same_snapshot "run without flags keeps the settings: the tree is unchanged" "$work/s1" "$work/s3"
    no_mutating_sysctl again-noflags
    out_has again-noflags "runtime none (the previous install"

    inst dry-installed 0 --dry-run --binary /t/shoal --sha256 "$SHA"
    out_lacks dry-installed "would write"
    out_lacks dry-installed "would rewrite"
    no_mutating_sysctl dry-installed
    snapshot >"$work/s4"
    same_snapshot "--dry-run on an installed machine: the tree is unchanged" "$work/s1" "$work/s4"
}

test_changes() {
    section "install test: changed settings and binary"
    inst change 0 SHOAL_NODE_NAME=other-node SHOAL_RUNTIME=docker -- --binary /t/shoal
    out_has change "rewrite /etc/shoal/shoal.env"
    sysctl_is change "daemon-reload" "is-active --quiet shoal.service" \
        "is-enabled --quiet shoal.service" "restart shoal.service"
    unit_has "ExecStart=/usr/local/bin/shoal node run --data-dir /var/lib/shoal --runtime docker --name other-node"
    ct_check "env file: the new name and runtime" \
        'grep -qx SHOAL_NODE_NAME=other-node /etc/shoal/shoal.env && grep -qx SHOAL_RUNTIME=docker /etc/shoal/shoal.env'
    ct_check "runtime docker: user shoal is in group docker" 'id -nG shoal | grep -qw docker'
    stat_is /etc/shoal/shoal.env "600 root:root"

    if ct sh -c "test -x /usr/bin/curl"; then
        inst new-binary 0 --binary file:///t/shoal2 --sha256 "$SHA2"
        out_has new-binary "downloading file:///t/shoal2"
        ct_check "the binary was replaced by the downloaded one" "cmp /t/shoal2 /usr/local/bin/shoal"
    else
        info "curl is not installed on this machine: replacing the binary from a path instead of a URL"
        inst new-binary 0 --binary /t/shoal2 --sha256 "$SHA2"
    fi
    stat_is /usr/local/bin/shoal "755 root:root"
    sysctl_is new-binary "is-active --quiet shoal.service" "is-enabled --quiet shoal.service" \
        "restart shoal.service"

    inst move 0 --install-dir /usr/local/sbin
    unit_has "ExecStart=/usr/local/sbin/shoal node run --data-dir /var/lib/shoal --runtime docker --name other-node"
    ct_check "--install-dir: the binary moved" 'cmp /t/shoal2 /usr/local/sbin/shoal && ! test -e /usr/local/bin/shoal'
    sysctl_is move "daemon-reload" "is-active --quiet shoal.service" "is-enabled --quiet shoal.service" \
        "restart shoal.service"

    inst back 0 --binary /t/shoal --sha256 "$SHA" --runtime none --name "$HOST" --install-dir /usr/local/bin
    ct_check "--install-dir back: the binary moved back" '! test -e /usr/local/sbin/shoal && cmp /t/shoal /usr/local/bin/shoal'

    ct_check "runtime none again: user shoal left group docker" '! id -nG shoal | grep -qw docker'
    snapshot >"$work/s-back"
    ct sh -c 'rm -f /t/state/active'
    inst stopped 0
    sysctl_is stopped "is-active --quiet shoal.service" "is-enabled --quiet shoal.service" \
        "start shoal.service"
    snapshot >"$work/s-stopped"
    same_snapshot "a stopped service is started, no file changes" "$work/s-back" "$work/s-stopped"
}

test_join() {
    section "install test: joining with a ticket"
    inst join 0 --binary /t/stub-shoal --sha256 "$SHA_STUB" --ticket shoal-ticket-123
    ct cat /t/log/shoal.log >"$work/shoal.log" 2>&1 || true
    local sock="--socket /run/shoal/shoal.sock"
    if grep -qxF "shoal HOME=/var/lib/shoal $sock node join shoal-ticket-123" "$work/shoal.log" &&
        [[ $(grep -cF -- "$sock team list" "$work/shoal.log") == 3 ]] &&
        grep -qxF "shoal HOME=/var/lib/shoal $sock node list" "$work/shoal.log"; then
        pass "join: waited for the socket (3 tries), joined and listed the nodes as user shoal"
    else
        fail "join: the shoal calls were:"
        show "$work/shoal.log"
    fi
    out_has join "shoal-test-node  connected"
    ct sh -c 'rm -f /t/log/shoal.log && touch /t/log/daemon-down'
    inst join-timeout 1 SHOAL_JOIN_TIMEOUT=2 -- --ticket shoal-ticket-123
    out_has join-timeout "did not answer on /run/shoal/shoal.sock within 2s"
    out_has join-timeout "runuser -u shoal -- /usr/local/bin/shoal --socket /run/shoal/shoal.sock node join shoal-ticket-123"
    ct_check "join timeout: join was not attempted" '! grep -q "node join" /t/log/shoal.log'
    ct sh -c 'rm -f /t/log/daemon-down /t/log/shoal.log'
}

test_uninstall() {
    section "install test: --uninstall and --purge"
    snapshot >"$work/s-before-un"
    inst un-dry 0 --uninstall --purge --dry-run
    out_has un-dry "would remove the user shoal: userdel shoal"
    out_has un-dry "would delete the data dir /var/lib/shoal and everything in it"
    no_mutating_sysctl un-dry
    snapshot >"$work/s-un-dry"
    same_snapshot "--uninstall --dry-run: the tree is unchanged" "$work/s-before-un" "$work/s-un-dry"

    inst uninstall 0 --uninstall
    sysctl_is uninstall "disable --now shoal.service" "daemon-reload"
    out_has uninstall "kept the data dir /var/lib/shoal"
    content_snapshot >"$work/c-uninstall"
    grep -v '^/var/lib/shoal ' "$work/c-uninstall" >"$work/c-uninstall-nodata" || true
    same_snapshot "--uninstall: the tree is as before the install, but for the data dir" \
        "$work/c0" "$work/c-uninstall-nodata"
    ct_check "--uninstall: the data dir is kept" "test -d /var/lib/shoal"
    ct_check "--uninstall: user and group shoal are gone" '! getent passwd shoal && ! getent group shoal'

    # As after a reinstall that gave user shoal another uid.
    ct sh -c 'touch /var/lib/shoal/node.redb && chown -R 4321:4321 /var/lib/shoal'
    inst reinstall 0 --binary /t/shoal --sha256 "$SHA"
    stat_is /var/lib/shoal/node.redb "644 shoal:shoal"
    inst purge 0 --uninstall --purge
    out_has purge "delete the data dir /var/lib/shoal"
    content_snapshot >"$work/c-purge"
    same_snapshot "--uninstall --purge: the tree is exactly as before the install" "$work/c0" "$work/c-purge"

    ct useradd --system --no-create-home --comment "someone else" shoal
    inst not-ours 0 --uninstall
    out_has not-ours "user shoal was not made by this installer"
    ct_check "a user shoal the installer did not make is kept" 'getent passwd shoal'
    ct userdel shoal
}

test_no_systemd() {
    section "install test: without systemd"
    inst_with "$CT_PATH_NO_SYSTEMCTL" sh no-systemd 0 -- --binary /t/stub-shoal --ticket shoal-ticket-456
    out_has no-systemd "systemd is not available here (no systemctl): the service was not started"
    out_has no-systemd "install -d -o shoal -g shoal -m 750 /run/shoal && runuser -u shoal -- /usr/local/bin/shoal --socket /run/shoal/shoal.sock node run --data-dir /var/lib/shoal --runtime none --name $HOST"
    out_has no-systemd "runuser -u shoal -- /usr/local/bin/shoal --socket /run/shoal/shoal.sock node join shoal-ticket-456"
    check "no systemd: systemctl was not called" test ! -s "$work/no-systemd.sysctl"
    stat_is /etc/systemd/system/shoal.service "644 root:root"
    stat_is /etc/shoal/shoal.env "600 root:root"
    # Run the printed commands for real (the binary is the stand-in).
    grep '^    ' "$work/no-systemd.out" >"$work/manual.sh"
    if ct sh -e <"$work/manual.sh" >"$work/manual.out" 2>&1 &&
        ct cat /t/log/shoal.log >"$work/shoal.log" 2>&1 &&
        grep -qF "shoal HOME=/var/lib/shoal --socket /run/shoal/shoal.sock node run --data-dir" "$work/shoal.log" &&
        grep -qF "shoal HOME=/var/lib/shoal --socket /run/shoal/shoal.sock node join shoal-ticket-456" "$work/shoal.log"; then
        pass "no systemd: the printed commands run the daemon and join as user shoal"
    else
        fail "no systemd: the printed commands:"
        show "$work/manual.sh"
        show "$work/manual.out"
        show "$work/shoal.log"
    fi
    stat_is /run/shoal "750 shoal:shoal"

    ct sh -c 'rm -rf /run/systemd/system'
    inst no-run-systemd 0 --binary /t/stub-shoal
    out_has no-run-systemd "systemd is not running here (no /run/systemd/system)"
    check "systemd not running: systemctl was not called" test ! -s "$work/no-run-systemd.sysctl"
    ct sh -c 'mkdir -p /run/systemd/system'

    inst_with "$CT_PATH_NO_SYSTEMCTL" sh no-systemd-purge 0 -- --uninstall --purge
    content_snapshot >"$work/c-nosd"
    same_snapshot "no systemd: --uninstall --purge leaves the tree as before" "$work/c0" "$work/c-nosd"
}

test_root() {
    section "install test: --root"
    ct sh -c 'mkdir -p /altroot/etc && cp -p /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/login.defs /altroot/etc/'
    snapshot >"$work/s-before-root"
    inst root 0 --root /altroot --binary /t/shoal --sha256 "$SHA" --ticket T9 --name image-node
    check "--root: systemctl was not called" test ! -s "$work/root.sysctl"
    out_has root "the ticket is not used with --root"
    stat_is /altroot/usr/local/bin/shoal "755 root:root"
    stat_is /altroot/etc/shoal/shoal.env "600 root:root"
    ct_check "--root: the unit is in the tree and enabled by its link" '
        grep -qx "ExecStart=/usr/local/bin/shoal node run --data-dir /var/lib/shoal --runtime none --name image-node" \
            /altroot/etc/systemd/system/shoal.service &&
        [ "$(readlink /altroot/etc/systemd/system/multi-user.target.wants/shoal.service)" = /etc/systemd/system/shoal.service ]'
    ct_check "--root: user shoal is in the tree's passwd, not the machine's" \
        'grep -q "^shoal:.*:/var/lib/shoal:" /altroot/etc/passwd && ! getent passwd shoal'
    ct_check "--root: the data dir belongs to the tree's shoal" '
        uid=$(awk -F: "\$1 == \"shoal\" { print \$3 }" /altroot/etc/passwd) &&
        [ "$(stat -c "%a %u" /altroot/var/lib/shoal)" = "700 $uid" ]'
    snapshot >"$work/s-root"
    same_snapshot "--root: nothing outside the tree changed" "$work/s-before-root" "$work/s-root"
    inst root-again 0 --root /altroot --binary /t/shoal --sha256 "$SHA"
    out_has root-again "nothing written"
    inst root-purge 0 --root /altroot --uninstall --purge
    ct_check "--root --uninstall --purge: nothing of shoal is left in the tree" '
        ! grep -q "^shoal:" /altroot/etc/passwd /altroot/etc/group &&
        [ -z "$(find /altroot -name "shoal*")" ]'
}

# test_messages: every line the installer printed is a message prefixed
# shoal-install: or an indented detail under one (the help and the output
# of shoal itself aside).
test_messages() {
    section "install test: messages"
    local name bad=0
    for name in "${runs[@]}"; do
        [[ $name == help || $name == join ]] && continue
        if grep -vE '^(shoal-install: |    )' "$work/$name.out" >"$work/unprefixed"; then
            fail "$name: lines without the shoal-install: prefix:"
            show "$work/unprefixed"
            bad=1
        fi
    done
    if ((bad == 0)); then pass "every message of ${#runs[@]} runs is prefixed shoal-install:"; fi
}

main() {
    docker_answers || die "the Docker engine does not answer: start it (scripts/test.sh does)"
    test_shellcheck
    build_image
    write_payload
    start_container
    info "container $CT from $IMAGE (--network none, hostname $HOST)"
    snapshot >"$work/s0"
    content_snapshot >"$work/c0"
    test_usage
    test_dry_run_fresh
    test_install
    test_idempotent
    test_changes
    test_join
    test_uninstall
    test_no_systemd
    test_root
    test_messages
    section "install test: $checks checks, $failures failed, in $(elapsed "$start")s"
    ((failures == 0)) || die "$failures install test checks failed"
}

main "$@"
