#!/usr/bin/env bash
# Builds the test images from Debian's busybox-static (no image is pulled from
# anywhere) and pushes them to both local test registries. Called by
# scripts/test.sh, which starts the registries first; it can also be run alone
# once scripts/test.sh has written /tmp/shoal-test-env/env.
#
# Images, in both registries:
#   shoal-test/busybox:1.0   busybox rootfs, CMD ["sh"], ENV SHOAL_TEST_IMAGE=busybox:1.0
#   shoal-test/busybox:1.1   same layer, ENV/LABEL say 1.1, so its digest differs
#   shoal-test/httpd:1.0     busybox rootfs + /www/index.html,
#                            CMD ["httpd","-f","-p","8080","-h","/www"], EXPOSE 8080
# Only in the auth registry (tag pagination):
#   shoal-test/many:t001 .. t120 (all the busybox:1.0 manifest)
#
# The rootfs has /bin/busybox with a symlink per applet at its usual path
# (busybox --list-full), /etc/passwd and /etc/group with root and nobody,
# and /tmp (1777). The local Docker engine keeps the shoal-test/* tags.
#
# Idempotent: nothing is built or pushed when the registries hold every tag.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
load_state_env

open_registry=${SHOAL_TEST_REGISTRY:-$SHOAL_REGISTRY_ADDR}
auth_registry=${SHOAL_TEST_AUTH_REGISTRY:-$SHOAL_AUTH_REGISTRY_ADDR}
registry_user=${SHOAL_TEST_REGISTRY_USER:-$SHOAL_REGISTRY_USER}
registry_password=${SHOAL_TEST_REGISTRY_PASSWORD:?SHOAL_TEST_REGISTRY_PASSWORD is not set; run scripts/test.sh}

images=(busybox:1.0 busybox:1.1 httpd:1.0)
many_repo=shoal-test/many
many_count=120
manifest_type=application/vnd.docker.distribution.manifest.v2+json

many_tags=()
for ((i = 1; i <= many_count; i++)); do
    many_tags+=("$(printf 't%03d' "$i")")
done

# tags_json REGISTRY REPO: the registry's tag list for REPO ("" if none).
tags_json() {
    local -a auth=()
    [[ $1 != "$auth_registry" ]] || auth=(-u "$registry_user:$registry_password")
    curl -s -m 10 "${auth[@]}" "http://$1/v2/$2/tags/list?n=10000" 2>/dev/null || true
}

has_tag() {
    [[ $1 == *"\"$2\""* ]]
}

# ------------------------------------------------ what is missing
declare -A missing=() # "registry image" -> 1
for registry in "$open_registry" "$auth_registry"; do
    declare -A json_by_repo=()
    for image in "${images[@]}"; do
        repo=shoal-test/${image%%:*}
        [[ -v json_by_repo[$repo] ]] || json_by_repo[$repo]=$(tags_json "$registry" "$repo")
        has_tag "${json_by_repo[$repo]}" "${image#*:}" || missing["$registry $image"]=1
    done
    unset json_by_repo
done
many_json=$(tags_json "$auth_registry" "$many_repo")
many_missing=()
for tag in "${many_tags[@]}"; do
    has_tag "$many_json" "$tag" || many_missing+=("$tag")
done

if ((${#missing[@]} == 0 && ${#many_missing[@]} == 0)); then
    info "both registries already hold every test image and tag; nothing to do"
    exit 0
fi

docker_answers || die "the Docker engine does not answer; it is needed to build the test images"
[[ -x /bin/busybox ]] || die "/bin/busybox not found (package busybox-static)"

work=$SHOAL_STATE_DIR/images
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# ------------------------------------------------ rootfs
# make_rootfs DIR: busybox-static with its applet symlinks.
make_rootfs() {
    local root=$1 applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var,proc,sys,dev}
    chmod 1777 "$root/tmp"
    chmod 700 "$root/root"
    cp /bin/busybox "$root/bin/busybox"
    chmod 755 "$root/bin/busybox"
    while read -r applet; do
        [[ -n $applet && $applet != bin/busybox && $applet != linuxrc && ! -e $root/$applet ]] || continue
        mkdir -p "$(dirname "$root/$applet")"
        ln -s /bin/busybox "$root/$applet"
    done < <(/bin/busybox --list-full)
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
}

# pack DIR TAR: a reproducible tar of DIR.
pack() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

path_env='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# ensure_local_image IMAGE: import shoal-test/IMAGE unless the engine has it.
ensure_local_image() {
    local image=$1 name=${1%%:*} version=${1#*:} ref=shoal-test/$1
    if docker image inspect "$ref" >/dev/null 2>&1; then
        return
    fi
    local -a changes=(
        --change "$path_env"
        --change "ENV SHOAL_TEST_IMAGE=$image"
        --change "LABEL org.opencontainers.image.title=shoal-test/$name"
        --change "LABEL org.opencontainers.image.version=$version"
    )
    local tarball
    case $name in
    busybox)
        tarball=$work/busybox.tar
        if [[ ! -f $tarball ]]; then
            make_rootfs "$work/busybox"
            pack "$work/busybox" "$tarball"
        fi
        changes+=(--change 'CMD ["sh"]')
        ;;
    httpd)
        tarball=$work/httpd.tar
        make_rootfs "$work/httpd"
        mkdir -p "$work/httpd/www"
        printf 'hello from shoal-test/httpd:%s\n' "$version" >"$work/httpd/www/index.html"
        pack "$work/httpd" "$tarball"
        changes+=(--change 'EXPOSE 8080' --change 'CMD ["httpd","-f","-p","8080","-h","/www"]')
        ;;
    *) die "unknown test image $image" ;;
    esac
    info "importing $ref"
    docker import "${changes[@]}" "$tarball" "$ref" >/dev/null
    # A dynamically linked /bin/busybox would not run in the image.
    docker run --rm --network none "$ref" /bin/busybox true ||
        die "cannot run a container from $ref (is /bin/busybox from busybox-static?)"
}

# push IMAGE REGISTRY [TARGET]: push shoal-test/IMAGE as REGISTRY/TARGET.
push() {
    local src=shoal-test/$1 dst=$2/${3:-shoal-test/$1}
    info "pushing $dst"
    docker tag "$src" "$dst"
    if ! docker --config "$SHOAL_DOCKER_CONFIG" push -q "$dst" >"$work/push.log" 2>&1; then
        sed 's/^/    | /' "$work/push.log" >&2
        docker rmi "$dst" >/dev/null 2>&1 || true
        die "docker push $dst failed"
    fi
    docker rmi "$dst" >/dev/null
}

docker_login_auth_registry

for key in "${!missing[@]}"; do
    registry=${key% *}
    image=${key#* }
    ensure_local_image "$image"
    push "$image" "$registry"
done

# ------------------------------------------------ many tags
if ((${#many_missing[@]} > 0)); then
    info "adding ${#many_missing[@]} tags to $auth_registry/$many_repo"
    first=${many_tags[0]}
    if ! has_tag "$many_json" "$first"; then
        ensure_local_image busybox:1.0
        push busybox:1.0 "$auth_registry" "$many_repo:$first"
    fi
    # The other tags point at the same manifest: put it once per tag.
    curl -fsS -m 10 -u "$registry_user:$registry_password" -H "Accept: $manifest_type" \
        -o "$work/many.manifest" "http://$auth_registry/v2/$many_repo/manifests/$first" ||
        die "cannot read the manifest of $auth_registry/$many_repo:$first"
    for tag in "${many_missing[@]}"; do
        [[ $tag != "$first" ]] || continue
        curl -fsS -m 10 -u "$registry_user:$registry_password" -X PUT \
            -H "Content-Type: $manifest_type" --data-binary "@$work/many.manifest" \
            -o /dev/null "http://$auth_registry/v2/$many_repo/manifests/$tag" ||
            die "cannot put $auth_registry/$many_repo:$tag"
    done
fi

# ------------------------------------------------ check
for registry in "$open_registry" "$auth_registry"; do
    for image in "${images[@]}"; do
        has_tag "$(tags_json "$registry" "shoal-test/${image%%:*}")" "${image#*:}" ||
            die "$registry lacks shoal-test/$image after pushing it"
    done
done
many_json=$(tags_json "$auth_registry" "$many_repo")
for tag in "${many_tags[@]}"; do
    has_tag "$many_json" "$tag" || die "$auth_registry lacks $many_repo:$tag after pushing it"
done
info "test images are in $open_registry and $auth_registry"
