#!/bin/sh
# This is the shoal installer (scripts/install.sh).
#
# Installs, updates or removes the shoal node daemon on a Linux machine as a
# systemd service, then joins the team with the ticket it was given:
#
#   curl -fsSL URL/install.sh | sh -s -- --ticket TICKET --binary URL --sha256 HEX
#
# It is POSIX sh and idempotent: a run that would write the same files
# changes nothing and does not restart the service. Run with --help for the
# flags. Every flag can also be given as an environment variable (SHOAL_*).

# ---------------------------------------------------------------- messages

say() {
    printf 'shoal-install: %s\n' "$*"
}

warn() {
    printf 'shoal-install: warning: %s\n' "$*" >&2
}

die() {
    printf 'shoal-install: error: %s\n' "$*" >&2
    exit 1
}

usage_error() {
    printf 'shoal-install: error: %s\n' "$*" >&2
    printf 'shoal-install: run with --help for the flags\n' >&2
    exit 2
}

usage() {
    cat <<'EOF'
Installs the shoal node daemon as a systemd service and joins a team.

Usage:
  install.sh [--ticket T] [--binary PATH|URL] [--sha256 HEX] [OPTIONS]
  install.sh --uninstall [--purge] [OPTIONS]
  curl -fsSL URL/install.sh | sh -s -- --ticket T --binary URL --sha256 HEX

Options (each also read from the environment variable shown):
  --ticket T          join the team with this ticket once the daemon runs
                      (SHOAL_TICKET; printed by `shoal node add NAME`)
  --binary PATH|URL   the shoal binary to install; a URL is downloaded with
                      curl or wget (SHOAL_BINARY; default: keep the installed one)
  --sha256 HEX        the binary's SHA-256: refuse it on mismatch (SHOAL_SHA256;
                      without it a warning is printed)
  --install-dir DIR   where the binary goes (SHOAL_INSTALL_DIR; default
                      /usr/local/bin, or the one of the previous install)
  --data-dir D        the node's data dir, home of the shoal user
                      (SHOAL_DATA_DIR; default /var/lib/shoal, or the previous one)
  --runtime R         docker, kubernetes or none (SHOAL_RUNTIME; default: the
                      previous one, else docker when `docker info` answers, else none)
  --name N            the node's name in the team (SHOAL_NODE_NAME; default:
                      the previous one, else the host name)
  --dry-run           print every action it would take and change nothing
                      (SHOAL_DRY_RUN=1)
  --uninstall         remove what it installed: service, unit, env file, binary,
                      user; keeps the data dir (SHOAL_UNINSTALL=1)
  --purge             with --uninstall, also delete the data dir (SHOAL_PURGE=1)
  --root DIR          install into the tree DIR instead of / (SHOAL_ROOT): every
                      path written gets the prefix DIR, the user is added to
                      DIR/etc/passwd, the unit is enabled by its symlink, and
                      no service is started and no team is joined (for images,
                      chroots and tests)
  -h, --help          print this help

SHOAL_JOIN_TIMEOUT (seconds, default 60) bounds the wait for the daemon's
socket before joining.

What it writes: INSTALL_DIR/shoal (0755), the system user `shoal` (no login,
home = data dir, in group docker when the runtime is docker), the data dir
(0700, owned by shoal), /etc/shoal/shoal.env (0600) and
/etc/systemd/system/shoal.service; then it enables and starts shoal.service.
It must run as root; otherwise it re-runs itself with sudo.
EOF
}

# ---------------------------------------------------------------- arguments

# is_true VALUE: true for 1, yes, true, on.
is_true() {
    case $1 in
    1 | yes | true | on | YES | TRUE | ON | Yes | True | On) return 0 ;;
    *) return 1 ;;
    esac
}

# need_value FLAG [VALUE...]: fails when FLAG has no value after it.
need_value() {
    [ $# -ge 2 ] || usage_error "$1 needs a value"
}

parse_args() {
    TICKET=${SHOAL_TICKET:-}
    BINARY=${SHOAL_BINARY:-}
    SHA256=${SHOAL_SHA256:-}
    INSTALL_DIR=${SHOAL_INSTALL_DIR:-}
    DATA_DIR=${SHOAL_DATA_DIR:-}
    RUNTIME=${SHOAL_RUNTIME:-}
    NODE_NAME=${SHOAL_NODE_NAME:-}
    ROOT=${SHOAL_ROOT:-}
    JOIN_TIMEOUT=${SHOAL_JOIN_TIMEOUT:-60}
    DRY_RUN=0
    UNINSTALL=0
    PURGE=0
    if is_true "${SHOAL_DRY_RUN:-0}"; then DRY_RUN=1; fi
    if is_true "${SHOAL_UNINSTALL:-0}"; then UNINSTALL=1; fi
    if is_true "${SHOAL_PURGE:-0}"; then PURGE=1; fi

    while [ $# -gt 0 ]; do
        case $1 in
        --ticket | --binary | --sha256 | --install-dir | --data-dir | --runtime | --name | --root)
            need_value "$@"
            set_option "$1" "$2"
            shift 2
            ;;
        --ticket=* | --binary=* | --sha256=* | --install-dir=* | --data-dir=* | --runtime=* | --name=* | --root=*)
            set_option "${1%%=*}" "${1#*=}"
            shift
            ;;
        --dry-run) DRY_RUN=1 && shift ;;
        --uninstall) UNINSTALL=1 && shift ;;
        --purge) PURGE=1 && shift ;;
        -h | --help) usage && exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
        esac
    done
}

# set_option FLAG VALUE
set_option() {
    case $1 in
    --ticket) TICKET=$2 ;;
    --binary) BINARY=$2 ;;
    --sha256) SHA256=$2 ;;
    --install-dir) INSTALL_DIR=$2 ;;
    --data-dir) DATA_DIR=$2 ;;
    --runtime) RUNTIME=$2 ;;
    --name) NODE_NAME=$2 ;;
    --root) ROOT=$2 ;;
    esac
}

# check_dir WHAT DIR: DIR must be absolute and made of plain characters (it
# goes unquoted into the unit file).
check_dir() {
    case $2 in
    /*) ;;
    *) usage_error "$1 must be an absolute path, not '$2'" ;;
    esac
    case $2 in
    *[!A-Za-z0-9._/-]*) usage_error "$1 '$2' may only contain letters, digits and . _ - /" ;;
    */../* | */.. | */./* | */.) usage_error "$1 '$2' must not contain . or .. components" ;;
    esac
}

# strip_slashes PATH: PATH without trailing slashes ("/" stays "/").
strip_slashes() {
    ss_path=$1
    while :; do
        case $ss_path in
        */) [ "$ss_path" = / ] && break; ss_path=${ss_path%/} ;;
        *) break ;;
        esac
    done
    printf '%s\n' "$ss_path"
}

validate_args() {
    if [ "$PURGE" = 1 ] && [ "$UNINSTALL" != 1 ]; then
        usage_error "--purge only goes with --uninstall"
    fi
    if [ -n "$ROOT" ]; then
        check_dir "--root" "$ROOT"
        ROOT=$(strip_slashes "$ROOT")
        [ "$ROOT" != / ] || ROOT=
    fi
    if [ -n "$ROOT" ] && [ ! -d "$ROOT" ]; then
        usage_error "--root $ROOT is not a directory: create it first"
    fi
    if [ -n "$INSTALL_DIR" ]; then
        check_dir "--install-dir" "$INSTALL_DIR"
        INSTALL_DIR=$(strip_slashes "$INSTALL_DIR")
    fi
    if [ -n "$DATA_DIR" ]; then
        check_dir "--data-dir" "$DATA_DIR"
        DATA_DIR=$(strip_slashes "$DATA_DIR")
        check_data_dir "$DATA_DIR"
    fi
    case $RUNTIME in
    "" | docker | kubernetes | none) ;;
    *) usage_error "--runtime must be docker, kubernetes or none, not '$RUNTIME'" ;;
    esac
    if [ -n "$NODE_NAME" ]; then check_name "$NODE_NAME"; fi
    if [ -n "$SHA256" ]; then
        SHA256=$(printf '%s' "$SHA256" | tr 'A-F' 'a-f')
        case $SHA256 in
        *[!0-9a-f]*) usage_error "--sha256 must be 64 hex digits, not '$SHA256'" ;;
        esac
        [ ${#SHA256} -eq 64 ] || usage_error "--sha256 must be 64 hex digits; '$SHA256' has ${#SHA256}"
    fi
    case $TICKET in
    *[[:space:]\'\"\\]*) usage_error "--ticket has spaces or quotes: pass the ticket exactly as printed" ;;
    esac
    case $JOIN_TIMEOUT in
    "" | *[!0-9]*) usage_error "SHOAL_JOIN_TIMEOUT must be a number of seconds, not '$JOIN_TIMEOUT'" ;;
    esac
}

# check_data_dir DIR: refuses the system's own directories (--purge deletes
# the data dir).
check_data_dir() {
    case $1 in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /proc | /root | /run | /sbin | /srv | \
        /sys | /tmp | /usr | /usr/* | /var | /var/lib | /var/log | /var/tmp | /etc/*)
        usage_error "--data-dir $1 is a system directory: use a directory of its own, such as /var/lib/shoal"
        ;;
    esac
}

# check_name NAME: a node name (it goes into the unit file and the env file).
check_name() {
    case $1 in
    [A-Za-z0-9]*) ;;
    *) usage_error "--name '$1' must start with a letter or a digit" ;;
    esac
    case $1 in
    *[!A-Za-z0-9._-]*) usage_error "--name '$1' may only contain letters, digits and . _ -" ;;
    esac
    [ ${#1} -le 63 ] || usage_error "--name '$1' is longer than 63 characters"
}

# ---------------------------------------------------------------- root

# is_this_script: true when $0 is this file (not `curl ... | sh`).
is_this_script() {
    [ -f "$0" ] && [ -r "$0" ] && grep -q '^# This is the shoal installer' "$0" 2>/dev/null
}

# ensure_root ARGS...: re-runs the script with sudo when not root.
ensure_root() {
    [ "$(id -u)" = 0 ] && return 0
    if [ -n "${SHOAL_INSTALL_SUDO:-}" ]; then
        die "still not root after sudo: run it as root"
    fi
    if ! command -v sudo >/dev/null 2>&1; then
        if [ "$DRY_RUN" = 1 ]; then
            warn "not root and no sudo: the dry run may not see every file"
            return 0
        fi
        die "this must run as root and sudo is not installed: run it again as root (su -c ...)"
    fi
    if ! is_this_script; then
        if [ "$DRY_RUN" = 1 ]; then
            warn "not root: the dry run may not see every file; pipe it to 'sudo sh -s --' to see them all"
            return 0
        fi
        die "this must run as root: pipe the script to 'sudo sh -s -- ...' instead of 'sh -s -- ...'," \
            "or save it to a file and run 'sh install.sh ...'"
    fi
    say "not root: running again with sudo"
    exec sudo -- env SHOAL_INSTALL_SUDO=1 \
        "SHOAL_TICKET=${SHOAL_TICKET:-}" "SHOAL_BINARY=${SHOAL_BINARY:-}" \
        "SHOAL_SHA256=${SHOAL_SHA256:-}" "SHOAL_INSTALL_DIR=${SHOAL_INSTALL_DIR:-}" \
        "SHOAL_DATA_DIR=${SHOAL_DATA_DIR:-}" "SHOAL_RUNTIME=${SHOAL_RUNTIME:-}" \
        "SHOAL_NODE_NAME=${SHOAL_NODE_NAME:-}" "SHOAL_ROOT=${SHOAL_ROOT:-}" \
        "SHOAL_DRY_RUN=${SHOAL_DRY_RUN:-}" "SHOAL_UNINSTALL=${SHOAL_UNINSTALL:-}" \
        "SHOAL_PURGE=${SHOAL_PURGE:-}" "SHOAL_JOIN_TIMEOUT=${SHOAL_JOIN_TIMEOUT:-}" \
        sh "$0" "$@"
}

# ---------------------------------------------------------------- helpers

cleanup() {
    if [ -n "${TMP_TARGET:-}" ]; then rm -f "$TMP_TARGET"; fi
    if [ -n "${WORKDIR:-}" ]; then rm -rf "$WORKDIR"; fi
}

make_workdir() {
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/shoal-install.XXXXXX") ||
        die "cannot create a temporary directory in ${TMPDIR:-/tmp}: set TMPDIR to a writable directory"
}

# act DESCRIPTION CMD...: says what it does and runs CMD; with --dry-run only
# says what it would run.
act() {
    act_what=$1
    shift
    if [ "$DRY_RUN" = 1 ]; then
        case $1 in
        *_)
            # A wrapper of a shadow tool (useradd_...): show the real command.
            act_cmd=${1%_}
            shift
            if [ -n "$ROOT" ]; then act_cmd="$act_cmd --prefix $ROOT"; fi
            say "would $act_what: $act_cmd $*"
            ;;
        *) say "would $act_what: $*" ;;
        esac
        return 0
    fi
    say "$act_what"
    "$@" || die "could not $act_what (command: $*)${ACT_HINT:+; $ACT_HINT}"
    CHANGED_ANY=1
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# file_mode PATH: the octal mode, e.g. 600.
file_mode() {
    stat -c %a "$1" 2>/dev/null || echo unknown
}

# file_owner PATH: uid:gid.
file_owner() {
    stat -c %u:%g "$1" 2>/dev/null || echo unknown
}

# sha256_of FILE: prints the file's SHA-256 in lowercase hex.
sha256_of() {
    if have sha256sum; then
        s_out=$(sha256sum "$1") || return 1
    elif have shasum; then
        s_out=$(shasum -a 256 "$1") || return 1
    elif have openssl; then
        s_out=$(openssl dgst -sha256 -r "$1") || return 1
    else
        die "no sha256sum, shasum or openssl found to check the binary: install coreutils"
    fi
    printf '%s\n' "${s_out%% *}" | tr 'A-F' 'a-f'
}

# quote WORD: WORD single-quoted for a shell, when it needs it.
quote() {
    case $1 in
    "" | *[!A-Za-z0-9._/:=@%+,-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
    esac
}

# ---------------------------------------------------------------- settings

set_paths() {
    ENV_FILE=/etc/shoal/shoal.env
    UNIT_FILE=/etc/systemd/system/shoal.service
    WANTS_LINK=/etc/systemd/system/multi-user.target.wants/shoal.service
    SOCKET=/run/shoal/shoal.sock
    USER_NAME=shoal
    # Marks the user as made by this script: --uninstall removes only that one.
    USER_COMMENT="shoal node daemon"
}

# previous_env KEY: the value KEY had in the installed env file, if any.
previous_env() {
    [ -r "$ROOT$ENV_FILE" ] || return 0
    sed -n "s/^$1=//p" "$ROOT$ENV_FILE" | tail -n 1
}

# previous_install_dir: the install dir named in the installed unit, if any.
previous_install_dir() {
    [ -r "$ROOT$UNIT_FILE" ] || return 0
    sed -n 's|^ExecStart=\(/[^ ]*\)/shoal .*|\1|p' "$ROOT$UNIT_FILE" | tail -n 1
}

# keep_previous WHAT VALUE: VALUE when it passes the checks, else nothing.
keep_previous() {
    case $1 in
    dir)
        case $2 in
        /*[!A-Za-z0-9._/-]* | "") ;;
        /*) printf '%s\n' "$2" ;;
        esac
        ;;
    runtime)
        case $2 in docker | kubernetes | none) printf '%s\n' "$2" ;; esac
        ;;
    name)
        case $2 in
        "" | *[!A-Za-z0-9._-]*) ;;
        *) printf '%s\n' "$2" ;;
        esac
        ;;
    esac
}

docker_answers() {
    have docker || return 1
    if have timeout; then
        timeout 15 docker info >/dev/null 2>&1
    else
        docker info >/dev/null 2>&1
    fi
}

# resolve_dirs: install and data dirs from the flags, else the previous
# install, else the defaults.
resolve_dirs() {
    PREV_INSTALL_DIR=$(keep_previous dir "$(previous_install_dir)")
    PREV_DATA_DIR=$(keep_previous dir "$(previous_env SHOAL_DATA_DIR)")
    if [ -z "$INSTALL_DIR" ]; then
        INSTALL_DIR=$PREV_INSTALL_DIR
        [ -n "$INSTALL_DIR" ] || INSTALL_DIR=/usr/local/bin
    fi
    if [ -z "$DATA_DIR" ]; then
        DATA_DIR=$PREV_DATA_DIR
        [ -n "$DATA_DIR" ] || DATA_DIR=/var/lib/shoal
        check_data_dir "$DATA_DIR"
    fi
    BIN_PATH=$INSTALL_DIR/shoal
}

resolve_runtime_and_name() {
    if [ -n "$RUNTIME" ]; then
        RUNTIME_FROM="--runtime"
    else
        RUNTIME=$(keep_previous runtime "$(previous_env SHOAL_RUNTIME)")
        if [ -n "$RUNTIME" ]; then
            RUNTIME_FROM="the previous install; --runtime changes it"
        elif docker_answers; then
            RUNTIME=docker
            RUNTIME_FROM="a Docker engine answers"
        else
            RUNTIME=none
            RUNTIME_FROM="no Docker engine answers; --runtime docker|kubernetes to choose"
        fi
    fi
    if [ -n "$NODE_NAME" ]; then
        NAME_FROM="--name"
    else
        NODE_NAME=$(keep_previous name "$(previous_env SHOAL_NODE_NAME)")
        if [ -n "$NODE_NAME" ]; then
            NAME_FROM="the previous install; --name changes it"
        else
            NODE_NAME=$(uname -n 2>/dev/null || true)
            NODE_NAME=${NODE_NAME%%.*}
            NAME_FROM="the host name"
            [ -n "$NODE_NAME" ] || die "cannot read the host name: pass --name NAME"
            case $NODE_NAME in
            [A-Za-z0-9]*[!A-Za-z0-9._-]* | [!A-Za-z0-9]*)
                die "the host name '$NODE_NAME' is not a valid node name: pass --name NAME"
                ;;
            esac
            [ ${#NODE_NAME} -le 63 ] || die "the host name '$NODE_NAME' is longer than 63 characters: pass --name NAME"
        fi
    fi
    say "runtime $RUNTIME ($RUNTIME_FROM); node name $NODE_NAME ($NAME_FROM)"
}

# systemd_running: true when systemd manages this machine.
systemd_running() {
    have systemctl && [ -d /run/systemd/system ]
}

# ---------------------------------------------------------------- binary

# fetch_binary: sets SRC_BIN to a local file holding the binary to install,
# verified against --sha256. Writes nothing outside the work dir.
fetch_binary() {
    SRC_BIN=
    case $BINARY in
    "")
        if [ -f "$ROOT$BIN_PATH" ]; then
            SRC_BIN=$ROOT$BIN_PATH
            say "no --binary: keeping the installed $BIN_PATH"
        elif [ -n "$PREV_INSTALL_DIR" ] && [ -f "$ROOT$PREV_INSTALL_DIR/shoal" ]; then
            SRC_BIN=$ROOT$PREV_INSTALL_DIR/shoal
            say "no --binary: moving the installed $PREV_INSTALL_DIR/shoal"
        else
            die "no shoal binary to install: pass --binary PATH or --binary URL" \
                "(\`shoal node add NAME\` prints the whole command)"
        fi
        ;;
    http://* | https://* | ftp://* | file://*)
        SRC_BIN=$WORKDIR/shoal.download
        say "downloading $BINARY"
        if have curl; then
            curl -fsSL --retry 3 -o "$SRC_BIN" "$BINARY" ||
                die "could not download $BINARY with curl: check the URL and the network"
        elif have wget; then
            wget -q -O "$SRC_BIN" "$BINARY" ||
                die "could not download $BINARY with wget: check the URL and the network"
        else
            die "neither curl nor wget is installed to download $BINARY: install one, or pass --binary PATH"
        fi
        ;;
    *)
        [ -f "$BINARY" ] || die "--binary $BINARY is not a file: pass the path of the shoal binary or a URL"
        [ -r "$BINARY" ] || die "--binary $BINARY is not readable"
        SRC_BIN=$BINARY
        ;;
    esac
    [ -s "$SRC_BIN" ] || die "the binary from ${BINARY:-$BIN_PATH} is empty"

    BIN_SHA=$(sha256_of "$SRC_BIN") || exit 1
    if [ -n "$SHA256" ]; then
        if [ "$BIN_SHA" != "$SHA256" ]; then
            die "checksum mismatch for ${BINARY:-$BIN_PATH}: expected sha256 $SHA256, got $BIN_SHA;" \
                "nothing was installed. Check that --binary and --sha256 belong to the same release"
        fi
        say "binary sha256 $BIN_SHA verified"
    else
        warn "no --sha256 given: the binary is not verified (sha256 $BIN_SHA); pass --sha256 HEX to check it"
    fi
}

# ---------------------------------------------------------------- files

# show_change LOGICAL NEW: in a dry run, shows what would change in a file.
show_change() {
    if [ -f "$ROOT$1" ] && have diff; then
        diff -u "$ROOT$1" "$2" | sed 1,2d | sed 's/^/    /' || true
    else
        sed 's/^/    /' "$2"
    fi
}

# ensure_dir LOGICAL: creates the parent directory chain of a file if needed.
ensure_dir() {
    [ -d "$ROOT$1" ] && return 0
    act "create directory $ROOT$1" mkdir -p -m 755 "$ROOT$1"
}

# put_file LOGICAL MODE SRC [show]: makes LOGICAL (under ROOT) hold SRC's
# content with MODE and owner root. Writes only when something differs, and
# atomically (a temp file in the same directory, then rename). Sets
# FILE_CHANGED=1 when the content changed.
put_file() {
    pf_path=$1
    pf_dest=$ROOT$1
    pf_mode=$2
    pf_src=$3
    FILE_CHANGED=0
    if [ -f "$pf_dest" ] && [ ! -L "$pf_dest" ] && cmp -s "$pf_src" "$pf_dest"; then
        if [ "$(file_mode "$pf_dest")" != "$pf_mode" ]; then
            act "set the mode of $pf_dest to $pf_mode" chmod "$pf_mode" "$pf_dest"
        fi
        if [ "$(file_owner "$pf_dest")" != 0:0 ]; then
            act "give $pf_dest to root" chown 0:0 "$pf_dest"
        fi
        return 0
    fi
    FILE_CHANGED=1
    ensure_dir "${pf_path%/*}"
    if [ "$DRY_RUN" = 1 ]; then
        if [ -e "$pf_dest" ]; then say "would rewrite $pf_dest (mode $pf_mode)"; else say "would write $pf_dest (mode $pf_mode)"; fi
        if [ "${4:-}" = show ]; then show_change "$pf_path" "$pf_src"; fi
        return 0
    fi
    if [ -e "$pf_dest" ]; then say "rewrite $pf_dest (mode $pf_mode)"; else say "write $pf_dest (mode $pf_mode)"; fi
    TMP_TARGET=${pf_dest%/*}/.${pf_dest##*/}.new.$$
    if ! { (umask 077 && cp "$pf_src" "$TMP_TARGET") &&
        chmod "$pf_mode" "$TMP_TARGET" &&
        chown 0:0 "$TMP_TARGET" &&
        mv -f "$TMP_TARGET" "$pf_dest"; }; then
        die "could not write $pf_dest: check that ${pf_dest%/*} is writable and has free space"
    fi
    TMP_TARGET=
    CHANGED_ANY=1
}

render_env() {
    cat <<EOF
# shoal node daemon settings, written by scripts/install.sh.
# Run the installer again to change them; edits here are replaced.
SHOAL_DATA_DIR=$DATA_DIR
SHOAL_RUNTIME=$RUNTIME
SHOAL_NODE_NAME=$NODE_NAME
SHOAL_SOCKET=$SOCKET
EOF
}

render_unit() {
    cat <<EOF
# The shoal node daemon, written by scripts/install.sh.
# Run the installer again to change it; edits here are replaced.
[Unit]
Description=shoal node daemon
After=network-online.target docker.service
Wants=network-online.target

[Service]
Type=simple
User=$USER_NAME
Group=$USER_NAME
EnvironmentFile=$ENV_FILE
ExecStart=$BIN_PATH node run --data-dir $DATA_DIR --runtime $RUNTIME --name $NODE_NAME
RuntimeDirectory=shoal
RuntimeDirectoryMode=0750
UMask=0077
Restart=always
RestartSec=2
TimeoutStopSec=30
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$DATA_DIR
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
EOF
}

# ---------------------------------------------------------------- user

# Wrappers that apply --root to the shadow tools.
useradd_() {
    if [ -n "$ROOT" ]; then useradd --prefix "$ROOT" "$@"; else useradd "$@"; fi
}
usermod_() {
    if [ -n "$ROOT" ]; then usermod --prefix "$ROOT" "$@"; else usermod "$@"; fi
}
userdel_() {
    if [ -n "$ROOT" ]; then userdel --prefix "$ROOT" "$@"; else userdel "$@"; fi
}
groupdel_() {
    if [ -n "$ROOT" ]; then groupdel --prefix "$ROOT" "$@"; else groupdel "$@"; fi
}

# passwd_field N: field N of the shoal user's /etc/passwd line (empty if none).
passwd_field() {
    [ -r "$ROOT/etc/passwd" ] || return 0
    awk -F: -v u="$USER_NAME" -v n="$1" '$1 == u { print $n; exit }' "$ROOT/etc/passwd"
}

user_exists() {
    [ -n "$(passwd_field 1)" ]
}

group_exists() {
    [ -r "$ROOT/etc/group" ] && awk -F: -v g="$1" '$1 == g { f = 1 } END { exit !f }' "$ROOT/etc/group"
}

# in_group GROUP: true when the shoal user is a supplementary member of GROUP.
in_group() {
    [ -r "$ROOT/etc/group" ] &&
        awk -F: -v g="$1" -v u="$USER_NAME" '
            $1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 }
            END { exit !f }' "$ROOT/etc/group"
}

nologin_shell() {
    for ns in /usr/sbin/nologin /sbin/nologin /usr/bin/nologin /bin/false; do
        if [ -x "$ROOT$ns" ]; then
            printf '%s\n' "$ns"
            return 0
        fi
    done
    printf '/usr/sbin/nologin\n'
}

ensure_user() {
    if [ ! -e "$ROOT/etc/passwd" ]; then
        die "$ROOT/etc/passwd does not exist: with --root, DIR must hold a system tree with /etc/passwd and /etc/group"
    fi
    if ! user_exists; then
        have useradd || die "useradd not found: install the passwd package (apt-get install passwd)"
        act "create the system user $USER_NAME (no login, home $DATA_DIR)" \
            useradd_ --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell "$(nologin_shell)" --comment "$USER_COMMENT" "$USER_NAME"
    elif [ "$(passwd_field 6)" != "$DATA_DIR" ]; then
        act "set the home of user $USER_NAME to $DATA_DIR" usermod_ --home "$DATA_DIR" "$USER_NAME"
    fi

    # Group docker gives the daemon the Docker socket.
    if [ "$RUNTIME" = docker ] && group_exists docker; then
        if ! user_exists || ! in_group docker; then
            act "add user $USER_NAME to group docker" usermod_ --append --groups docker "$USER_NAME"
            RESTART_NEEDED=1
        fi
    elif [ "$RUNTIME" = docker ]; then
        warn "runtime docker but there is no group docker: the daemon may not reach the Docker socket;" \
            "install Docker, then run this again"
    elif in_group docker; then
        act "remove user $USER_NAME from group docker (runtime $RUNTIME)" \
            usermod_ --remove --groups docker "$USER_NAME"
        RESTART_NEEDED=1
    fi
}

ensure_data_dir() {
    dd_dir=$ROOT$DATA_DIR
    dd_ids=$(passwd_field 3):$(passwd_field 4)
    # A dry run before the user exists shows names instead of ids.
    if [ "$dd_ids" = : ]; then dd_ids=$USER_NAME:$USER_NAME; fi
    if [ ! -d "$dd_dir" ]; then
        if [ -e "$dd_dir" ]; then die "$dd_dir exists and is not a directory: move it away or pass --data-dir"; fi
        act "create the data dir $dd_dir (mode 700)" mkdir -p -m 700 "$dd_dir"
        act "give $dd_dir to user $USER_NAME" chown "$dd_ids" "$dd_dir"
        return 0
    fi
    if [ "$(file_owner "$dd_dir")" != "$dd_ids" ]; then
        act "give $dd_dir and its content to user $USER_NAME" chown -R "$dd_ids" "$dd_dir"
    fi
    if [ "$(file_mode "$dd_dir")" != 700 ]; then
        act "set the mode of $dd_dir to 700" chmod 700 "$dd_dir"
    fi
}

# ensure_wants_link: with --root, enables the unit the way systemctl does.
ensure_wants_link() {
    if [ -L "$ROOT$WANTS_LINK" ] && [ "$(readlink "$ROOT$WANTS_LINK")" = "$UNIT_FILE" ]; then
        return 0
    fi
    ensure_dir "${WANTS_LINK%/*}"
    act "enable shoal.service in $ROOT (link $ROOT$WANTS_LINK)" ln -sfn "$UNIT_FILE" "$ROOT$WANTS_LINK"
}

# ---------------------------------------------------------------- running as shoal

# as_shoal CMD...: runs CMD as the shoal user.
as_shoal() {
    if have runuser; then
        runuser -u "$USER_NAME" -- env HOME="$DATA_DIR" "$@"
    elif have setpriv; then
        setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- env HOME="$DATA_DIR" "$@"
    elif have sudo; then
        sudo -u "$USER_NAME" -- env HOME="$DATA_DIR" "$@"
    else
        die "cannot run a command as user $USER_NAME: install util-linux (runuser) or sudo"
    fi
}

# as_shoal_text: how the printed commands run something as the shoal user.
as_shoal_text() {
    if have runuser; then
        printf 'runuser -u %s --' "$USER_NAME"
    elif have setpriv; then
        printf 'setpriv --reuid=%s --regid=%s --init-groups --' "$USER_NAME" "$USER_NAME"
    else
        printf 'sudo -u %s --' "$USER_NAME"
    fi
}

shoal_cmd_text() {
    printf '%s %s --socket %s' "$(as_shoal_text)" "$BIN_PATH" "$SOCKET"
}

print_manual_commands() {
    say "run the daemon by hand (as root, it stays in the foreground):"
    printf '    install -d -o %s -g %s -m 750 %s && %s node run --data-dir %s --runtime %s --name %s\n' \
        "$USER_NAME" "$USER_NAME" "${SOCKET%/*}" "$(shoal_cmd_text)" "$DATA_DIR" "$RUNTIME" "$NODE_NAME"
    if [ -n "$TICKET" ]; then
        say "then, from another shell, join the team:"
        printf '    %s node join %s\n' "$(shoal_cmd_text)" "$(quote "$TICKET")"
    fi
    say "and see the node's status with:"
    printf '    %s node list\n' "$(shoal_cmd_text)"
}

# ---------------------------------------------------------------- service

manage_service() {
    if [ -n "$ROOT" ]; then
        ensure_wants_link
        if [ "$DRY_RUN" != 1 ]; then say "installed into $ROOT: shoal.service starts when that system boots"; fi
        return 0
    fi
    if ! systemd_running; then
        if have systemctl; then
            say "systemd is not running here (no /run/systemd/system): the service was not started"
        else
            say "systemd is not available here (no systemctl): the service was not started"
        fi
        print_manual_commands
        return 0
    fi
    ACT_HINT="see 'systemctl status shoal' and 'journalctl -u shoal'"
    if [ "$UNIT_CHANGED" = 1 ]; then
        act "reload systemd units" systemctl daemon-reload
    fi
    ms_started=0
    ms_active=0
    if systemctl is-active --quiet shoal.service 2>/dev/null; then ms_active=1; fi
    if ! systemctl is-enabled --quiet shoal.service 2>/dev/null; then
        if [ "$ms_active" = 1 ]; then
            act "enable shoal.service" systemctl enable shoal.service
        else
            act "enable and start shoal.service" systemctl enable --now shoal.service
            ms_started=1
        fi
    fi
    if [ "$ms_active" = 1 ] && [ "$RESTART_NEEDED" = 1 ]; then
        act "restart shoal.service (its binary, settings or unit changed)" systemctl restart shoal.service
    elif [ "$ms_active" = 0 ] && [ "$ms_started" = 0 ]; then
        act "start shoal.service" systemctl start shoal.service
    elif [ "$ms_active" = 1 ]; then
        say "shoal.service is running and nothing it uses changed: not restarted"
    fi
}

# socket_answers: true when the daemon answers on its control socket.
socket_answers() {
    as_shoal "$BIN_PATH" --socket "$SOCKET" team list >/dev/null 2>&1
}

join_team() {
    [ -n "$TICKET" ] || return 0
    if [ -n "$ROOT" ]; then
        say "the ticket is not used with --root: once that system runs, join with:"
        printf '    %s node join %s\n' "$(shoal_cmd_text)" "$(quote "$TICKET")"
        return 0
    fi
    systemd_running || return 0
    if [ "$DRY_RUN" = 1 ]; then
        say "would wait up to ${JOIN_TIMEOUT}s for the daemon on $SOCKET, then join the team:" \
            "$(shoal_cmd_text) node join <ticket>"
        return 0
    fi
    say "waiting up to ${JOIN_TIMEOUT}s for the daemon to answer on $SOCKET"
    jt_waited=0
    until socket_answers; do
        if [ "$jt_waited" -ge "$JOIN_TIMEOUT" ]; then
            die "the daemon did not answer on $SOCKET within ${JOIN_TIMEOUT}s;" \
                "see 'systemctl status shoal' and 'journalctl -u shoal', then join with:" \
                "$(shoal_cmd_text) node join $(quote "$TICKET")"
        fi
        sleep 1
        jt_waited=$((jt_waited + 1))
    done
    say "joining the team"
    as_shoal "$BIN_PATH" --socket "$SOCKET" node join "$TICKET" ||
        die "joining the team failed (see the message above); once fixed, join with:" \
            "$(shoal_cmd_text) node join $(quote "$TICKET")"
    say "the team's nodes:"
    as_shoal "$BIN_PATH" --socket "$SOCKET" node list ||
        warn "could not list the nodes; try: $(shoal_cmd_text) node list"
}

# ---------------------------------------------------------------- install

# forget_previous_dirs: after a change of --install-dir, removes the binary
# the previous install put in the old one; after a change of --data-dir, says
# that the old data dir is kept.
forget_previous_dirs() {
    if [ -n "$PREV_INSTALL_DIR" ] && [ "$PREV_INSTALL_DIR" != "$INSTALL_DIR" ] &&
        [ -f "$ROOT$PREV_INSTALL_DIR/shoal" ]; then
        act "remove the previous binary $ROOT$PREV_INSTALL_DIR/shoal" rm -f "$ROOT$PREV_INSTALL_DIR/shoal"
    fi
    if [ -n "$PREV_DATA_DIR" ] && [ "$PREV_DATA_DIR" != "$DATA_DIR" ] && [ -d "$ROOT$PREV_DATA_DIR" ]; then
        warn "the previous data dir $ROOT$PREV_DATA_DIR is kept as it is; to keep this node's identity" \
            "and replica, stop shoal and move its content into $ROOT$DATA_DIR, then run this again"
    fi
}

install_shoal() {
    fetch_binary
    resolve_runtime_and_name

    render_env >"$WORKDIR/shoal.env"
    render_unit >"$WORKDIR/shoal.service"

    put_file "$BIN_PATH" 755 "$SRC_BIN"
    [ "$FILE_CHANGED" = 0 ] || RESTART_NEEDED=1
    ensure_user
    ensure_data_dir
    put_file "$ENV_FILE" 600 "$WORKDIR/shoal.env" show
    [ "$FILE_CHANGED" = 0 ] || RESTART_NEEDED=1
    put_file "$UNIT_FILE" 644 "$WORKDIR/shoal.service" show
    UNIT_CHANGED=$FILE_CHANGED
    [ "$FILE_CHANGED" = 0 ] || RESTART_NEEDED=1

    if [ "$DRY_RUN" = 1 ]; then
        :
    elif [ "$CHANGED_ANY" = 0 ]; then
        say "files and user were already up to date: nothing written"
    else
        say "installed $BIN_PATH (node $NODE_NAME, runtime $RUNTIME, data in $DATA_DIR)"
    fi
    forget_previous_dirs
    manage_service
    join_team
    if [ "$DRY_RUN" = 1 ]; then say "dry run: nothing was changed"; fi
}

# ---------------------------------------------------------------- uninstall

# remove_path WHAT PATH: removes a file or symlink if present.
remove_path() {
    if [ -e "$2" ] || [ -L "$2" ]; then
        act "remove $1 $2" rm -f "$2"
    fi
}

uninstall_shoal() {
    if [ -z "$ROOT" ] && systemd_running && { [ -e "$UNIT_FILE" ] ||
        systemctl is-enabled --quiet shoal.service 2>/dev/null ||
        systemctl is-active --quiet shoal.service 2>/dev/null; }; then
        act "stop and disable shoal.service" systemctl disable --now shoal.service
    fi
    remove_path "the enable link" "$ROOT$WANTS_LINK"
    un_unit=0
    if [ -e "$ROOT$UNIT_FILE" ]; then un_unit=1; fi
    remove_path "the unit" "$ROOT$UNIT_FILE"
    if [ "$un_unit" = 1 ] && [ -z "$ROOT" ] && systemd_running; then
        act "reload systemd units" systemctl daemon-reload
    fi
    remove_path "the env file" "$ROOT$ENV_FILE"
    if [ -d "$ROOT${ENV_FILE%/*}" ] && [ -z "$(ls -A "$ROOT${ENV_FILE%/*}")" ]; then
        act "remove the empty directory $ROOT${ENV_FILE%/*}" rmdir "$ROOT${ENV_FILE%/*}"
    fi
    remove_path "the binary" "$ROOT$BIN_PATH"
    if [ -d "$ROOT${SOCKET%/*}" ]; then
        act "remove the runtime directory $ROOT${SOCKET%/*}" rm -rf "$ROOT${SOCKET%/*}"
    fi
    if user_exists && [ "$(passwd_field 5)" != "$USER_COMMENT" ]; then
        warn "user $USER_NAME was not made by this installer (its comment is not '$USER_COMMENT'): kept"
    elif user_exists; then
        ACT_HINT="stop every process of user $USER_NAME (a shoal daemon started by hand?), then run this again"
        act "remove the user $USER_NAME" userdel_ "$USER_NAME"
        ACT_HINT=
    fi
    # userdel also removes the user's own group, unless login.defs says otherwise.
    if group_exists "$USER_NAME" && ! user_exists; then
        act "remove the group $USER_NAME" groupdel_ "$USER_NAME"
    fi
    if [ -d "$ROOT$DATA_DIR" ]; then
        if [ "$PURGE" = 1 ]; then
            act "delete the data dir $ROOT$DATA_DIR and everything in it" rm -rf "$ROOT$DATA_DIR"
        else
            say "kept the data dir $ROOT$DATA_DIR (the node's keys and replica); --uninstall --purge deletes it"
        fi
    fi
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: nothing was changed"
    elif [ "$CHANGED_ANY" = 0 ]; then
        say "nothing to remove: shoal is not installed${ROOT:+ in $ROOT}"
    else
        say "shoal is uninstalled"
    fi
}

# ---------------------------------------------------------------- main

main() {
    set -eu
    umask 022
    CHANGED_ANY=0
    RESTART_NEEDED=0
    UNIT_CHANGED=0
    FILE_CHANGED=0
    TMP_TARGET=
    WORKDIR=
    ACT_HINT=
    parse_args "$@"
    validate_args
    ensure_root "$@"
    set_paths
    resolve_dirs
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ "$DRY_RUN" = 1 ]; then say "dry run: printing what would be done, changing nothing"; fi
    if [ "$UNINSTALL" = 1 ]; then
        uninstall_shoal
    else
        make_workdir
        install_shoal
    fi
}

main "$@"
