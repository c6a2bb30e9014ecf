#!/usr/bin/env bash
# Builds the lab's container images as OCI image archives, without Docker: each archive is an oci-layout
# tarball with one uncompressed layer, a config (amd64/linux) and an index.json whose entries carry the full
# reference in both `org.opencontainers.image.ref.name` and `io.containerd.image.name`, so it works with
# `skopeo copy oci-archive:<file>:<ref> ...` and `ctr images import`. Archives are deterministic (sorted
# entries, mtime 0, uid/gid 0) and cached outside the clone in "$NOVANET_CACHE/images/<recipe>/":
#   <name>.tar   the archive      <name>.refs  its references, one a line      <name>.key  its input hash
# <recipe> hashes this script and pause.c; <name>.key hashes every input file, so an image is rebuilt
# exactly when something that goes into it changed (e.g. a new release build of the agent).
#
# Usage: tools/images/build.sh [--cargo] [name...]   build the named images (default: all); prints
#                                                     "<name> <archive>" per image on stdout
#        tools/images/build.sh --print-dir            print the archive directory and exit
#        tools/images/build.sh --list                 print "<name> <ref> [<ref>...]" per image
#   --cargo  run `cargo build --release --workspace --bins` first (otherwise only when a binary is missing)
#
# Names: pause busybox agnhost dnsutils coredns agent. Needs gcc + libc6-dev, busybox-static, wget, curl, netcat-openbsd,
# bind9-dnsutils, iproute2, bash, jq (scripts/setup.sh --k8s installs them) and, for agnhost, the Go-built
# agnhost and coredns (tools/build.sh; run here when missing).
set -euo pipefail
umask 022
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/scripts/env.sh"

all_names=(pause busybox agnhost dnsutils coredns agent)
agnhost_tag=2.56 # what e2e.test v1.34.4 uses (`e2e.test --list-images`); tests/registry.rs checks it
coredns_tag=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3; exit }' "$root/tools/coredns/go.mod")
agent_version=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
declare -A refs_of=(
  [pause]="registry.k8s.io/pause:3.10 registry.k8s.io/pause:3.10.1"
  # Debian's busybox is 1.35; the tags are the names e2e and common manifests ask for.
  [busybox]="docker.io/library/busybox:latest docker.io/library/busybox:1.36 docker.io/library/busybox:1.37 registry.k8s.io/e2e-test-images/busybox:1.36.1-1 registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
  [agnhost]="registry.k8s.io/e2e-test-images/agnhost:$agnhost_tag"
  # The querier of Kubernetes' DNS e2e tests (they run dig, getent, hostname -i, awk and seq in it).
  [dnsutils]="registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7"
  # The lab cluster's DNS (crates/novanet-lab/src/cluster_dns.rs); the tag is the pinned Go module's.
  [coredns]="registry.k8s.io/coredns/coredns:$coredns_tag"
  # The chart's default repository (ghcr.io/novanet/novanet-agent:<appVersion>) too.
  [agent]="docker.io/novanet/agent:$agent_version docker.io/novanet/agent:dev ghcr.io/novanet/novanet-agent:$agent_version"
)

recipe=$(cat "$here/build.sh" "$here/pause.c" | sha256sum | cut -c1-12)
out_dir="$NOVANET_CACHE/images/$recipe"

cargo_first=false
names=()
for arg in "$@"; do
  case "$arg" in
    --print-dir) echo "$out_dir"; exit 0 ;;
    --list) for n in "${all_names[@]}"; do echo "$n ${refs_of[$n]}"; done; exit 0 ;;
    --cargo) cargo_first=true ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "tools/images/build.sh: unknown option $arg" >&2; exit 2 ;;
    *) [ -n "${refs_of[$arg]:-}" ] || { echo "tools/images/build.sh: unknown image '$arg' (known: ${all_names[*]})" >&2; exit 2; }
       names+=("$arg") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=("${all_names[@]}")

mkdir -p "$out_dir"
exec 9>"$out_dir/.lock"
flock 9 # one builder at a time per recipe (parallel test runs share the cache)
touch "$out_dir/.lock"
# Each change to this script makes a new directory: drop those of other recipes unused for a week.
for old in "$NOVANET_CACHE/images"/*/; do
  if [ "${old%/}" != "$out_dir" ] && [ -n "$(find "${old}.lock" -mtime +7 2>/dev/null)" ]; then rm -rf "$old"; fi
done
work=$(mktemp -d "$out_dir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- The spec of an image: lines "d <path> <mode>", "f <path> <source> <mode>", "l <path> <target>". ----
spec=
add_dir() { spec+="d $1 ${2:-0755}"$'\n'; }
add_file() { [ -f "$2" ] || { echo "tools/images/build.sh: $2 not found" >&2; exit 1; }; spec+="f $1 $(readlink -f "$2") ${3:-0755}"$'\n'; }
add_link() { spec+="l $1 $2"$'\n'; }
# A text file (lines "$2"...) generated into the work dir, then added like any other file.
add_text() { local src="$work/gen/${1//\//_}"; mkdir -p "$work/gen"; printf '%s\n' "${@:2}" >"$src"; add_file "$1" "$src" 0644; }
# A dynamically linked program and its shared-library closure (at the paths ldd reports, e.g. /lib64/ld-...).
add_program() { # <path in image> <host binary>
  local bin; bin=$(command -v "$2" || true)
  [ -n "$bin" ] || { echo "tools/images/build.sh: $2 not found: run scripts/setup.sh --k8s" >&2; exit 1; }
  add_file "$1" "$bin"
  local lib
  for lib in $(ldd "$bin" 2>/dev/null | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    spec+="f $lib $(readlink -f "$lib") 0755"$'\n'
  done
}
add_busybox() { # busybox-static with a link per applet at its usual path, except the names in "$@"
  add_file /bin/busybox /bin/busybox
  local path
  for path in $(/bin/busybox --list-full); do
    [[ " $* wget " == *" ${path##*/} "* ]] || [ "$path" = bin/busybox ] || add_link "/$path" /bin/busybox
  done
  # Debian 12's busybox 1.35 wget (static and dynamic builds alike) segfaults on `-T <timeout>`, which
  # tutorials and e2e specs pass: GNU wget (same options for -q -O -T -S -U --spider --header
  # --post-data) with its libraries takes the applet's place. Busybox's shell runs it too (PATH first).
  add_program /usr/bin/wget wget
}
add_base() { # directories and files every image but pause has
  add_dir /tmp 1777; add_dir /root 0700; add_dir /etc; add_dir /var; add_dir /home
  add_text /etc/nsswitch.conf 'hosts: files dns'
}

path_env="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

k8s_bin() { # a Go-built binary from tools/build.sh (built if missing)
  local dir="${NOVANET_K8S_BIN_DIR:-$("$root/tools/build.sh" --print-bin-dir)}"
  [ -x "$dir/$1" ] || "$root/tools/build.sh" "$1" >&2
  echo "$dir/$1"
}

# ---- Recipes: each fills $spec and sets $config (the image config's "config" object, as JSON). ----
recipe_pause() {
  gcc -static -O2 -s -Wall -Wextra -o "$work/pause" "$here/pause.c"
  add_file /pause "$work/pause"
  config='{"Entrypoint":["/pause"],"User":"65535:65535"}'
}

recipe_busybox() {
  add_base
  add_busybox
  add_text /etc/passwd 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false'
  add_text /etc/group 'root:x:0:' 'nogroup:x:65534:'
  config=$(jq -cn --arg p "$path_env" '{Env: [$p], Cmd: ["sh"]}')
}

recipe_agnhost() {
  # Mirrors test/images/agnhost/Dockerfile (alpine + bind-tools curl netcat-openbsd iproute2 bash, and
  # alpine's getent).
  add_base
  # /bin/sh is bash, not busybox: Debian's busybox-static prefers its own applets inside its shell, so
  # `sh -c '... | nc -u ...'` (as e2e runs it) would get busybox's nc, which has no -u.
  add_busybox nc ip ss curl bash dig sh
  add_program /bin/bash bash
  add_link /bin/sh bash
  add_program /usr/bin/curl curl
  add_program /usr/bin/nc nc.openbsd
  add_program /usr/bin/dig dig
  add_program /usr/bin/getent getent # DNS e2e tests query through getent in this image too
  add_program /sbin/ip ip
  add_program /usr/bin/ss ss
  add_file /agnhost "$(k8s_bin agnhost)"
  add_link /agnhost-2 agnhost
  add_file /coredns "$(k8s_bin coredns)" # DNS e2e tests run `/coredns` from this image
  add_dir /uploads
  local porter="${GOMODCACHE:-$NOVANET_CACHE/go/mod}/k8s.io/kubernetes@v1.34.4/test/images/agnhost/porter"
  if [ -f "$porter/localhost.crt" ]; then
    add_file /localhost.crt "$porter/localhost.crt" 0644
    add_file /localhost.key "$porter/localhost.key" 0644
  else
    echo "tools/images/build.sh: warning: no porter certificates in $porter (agnhost porter TLS will fail)" >&2
  fi
  add_dir /home/user-defined-in-image
  add_text /etc/passwd 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false' \
    'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh'
  add_text /etc/group 'root:x:0:' 'nogroup:x:65534:' 'user-defined-in-image:x:1000:' \
    'group-defined-in-image:x:50000:user-defined-in-image'
  config=$(jq -cn --arg p "$path_env" '{Env: [$p], Entrypoint: ["/agnhost"], Cmd: ["pause"],
    ExposedPorts: {"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {}}}')
}

recipe_dnsutils() {
  # Mirrors test/images/jessie-dnsutils (Debian with dnsutils): a shell, dig, getent and the usual tools.
  add_base
  add_busybox dig getent sh bash
  add_program /bin/bash bash
  add_link /bin/sh bash
  add_program /usr/bin/dig dig
  add_program /usr/bin/getent getent
  add_text /etc/passwd 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false'
  add_text /etc/group 'root:x:0:' 'nogroup:x:65534:'
  config=$(jq -cn --arg p "$path_env" '{Env: [$p], Cmd: ["sh"]}')
}

recipe_coredns() {
  # Like the upstream image: the static binary and nothing else it needs.
  add_base
  add_file /coredns "$(k8s_bin coredns)"
  add_text /etc/passwd 'root:x:0:0:root:/root:/bin/false' 'nonroot:x:65532:65532:nonroot:/home:/bin/false'
  add_text /etc/group 'root:x:0:' 'nonroot:x:65532:'
  config='{"Entrypoint":["/coredns"],"ExposedPorts":{"53/tcp":{},"53/udp":{}}}'
}

recipe_agent() {
  local rel="$CARGO_TARGET_DIR/release" b
  if $cargo_first || [ ! -x "$rel/novanet-agent" ] || [ ! -x "$rel/novanet-cni" ] || [ ! -x "$rel/novanetctl" ]; then
    (cd "$root" && cargo build --release --workspace --bins) >&2
  fi
  add_base
  add_busybox
  for b in novanet-agent novanet-cni novanetctl; do add_program "/usr/local/bin/$b" "$rel/$b"; done
  # The reference portmap plugin (Debian's containernetworking-plugins), chained for pods' hostPorts.
  add_program /usr/local/lib/novanet/portmap /usr/lib/cni/portmap
  add_dir /etc/novanet; add_dir /run
  add_text /etc/passwd 'root:x:0:0:root:/root:/bin/sh'
  add_text /etc/group 'root:x:0:'
  config=$(jq -cn --arg p "$path_env" '{Env: [$p], Entrypoint: ["/usr/local/bin/novanet-agent"],
    Cmd: ["--config", "/etc/novanet/config.yaml", "run"]}')
}

# ---- Packing: spec -> rootfs -> layer tar -> OCI layout -> archive. ----
det_tar() { # <dir> <out>: a reproducible tar of the directory's contents
  tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf "$2" .
}
blob() { # <file>: moves it into the layout's blobs and prints its descriptor fields "sha256:<hex> <size>"
  local hex size; hex=$(sha256sum "$1" | cut -d' ' -f1); size=$(stat -c %s "$1")
  mv "$1" "$work/layout/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

pack() { # <name>
  local name=$1 rootfs="$work/rootfs-$1" kind path src mode
  rm -rf "$rootfs" "$work/layout"; mkdir -p "$rootfs" "$work/layout/blobs/sha256"
  while read -r kind path src mode; do
    case "$kind" in
      d) mkdir -p "$rootfs$path"; chmod "$src" "$rootfs$path" ;;
      f) install -D -m "$mode" "$src" "$rootfs$path" ;;
      l) mkdir -p "$(dirname "$rootfs$path")"; ln -sfn "$src" "$rootfs$path" ;;
    esac
  done <<<"$spec"
  det_tar "$rootfs" "$work/layer.tar"
  read -r layer layer_size < <(blob "$work/layer.tar")
  jq -cn --argjson c "$config" --arg l "$layer" '{architecture: "amd64", os: "linux",
    created: "1970-01-01T00:00:00Z", config: $c, rootfs: {type: "layers", diff_ids: [$l]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "tools/images/build.sh"}]}' | tr -d '\n' >"$work/config.json"
  read -r cfg cfg_size < <(blob "$work/config.json")
  jq -cn --arg c "$cfg" --argjson cs "$cfg_size" --arg l "$layer" --argjson ls "$layer_size" '{schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' | tr -d '\n' >"$work/manifest.json"
  read -r man man_size < <(blob "$work/manifest.json")
  printf '%s\n' ${refs_of[$name]} | jq -cR --arg m "$man" --argjson ms "$man_size" '{
    mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
    platform: {architecture: "amd64", os: "linux"},
    annotations: {"io.containerd.image.name": ., "org.opencontainers.image.ref.name": .}}' |
    jq -cs '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
    | tr -d '\n' >"$work/layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
  det_tar "$work/layout" "$out_dir/$name.tar.partial"
  rm -rf "$rootfs" "$work/layout"
}

for name in "${names[@]}"; do
  start=$SECONDS
  spec= config=
  "recipe_$name"
  # Every input: the recipe (script + pause.c), the references, the config, the spec and each file's hash.
  key=$( { echo "$recipe ${refs_of[$name]}"; echo "$config"; echo "${spec//$work/WORK}";
           awk '$1 == "f" { print $2, $3 }' <<<"$spec" | sort -u |
             while read -r dest src; do echo "$dest $(sha256sum <"$src" | cut -c1-64)"; done; } | sha256sum | cut -c1-16)
  if [ -f "$out_dir/$name.tar" ] && [ "$(cat "$out_dir/$name.key" 2>/dev/null)" = "$key" ]; then
    echo "tools/images/build.sh: $name: up to date" >&2
  else
    pack "$name"
    mv -f "$out_dir/$name.tar.partial" "$out_dir/$name.tar"
    printf '%s\n' ${refs_of[$name]} >"$out_dir/$name.refs"
    echo "$key" >"$out_dir/$name.key"
    echo "tools/images/build.sh: $name: built in $((SECONDS - start)) s ($(du -h "$out_dir/$name.tar" | cut -f1))" >&2
  fi
  echo "$name $out_dir/$name.tar"
done
