#!/usr/bin/env bash
# Builds the gotrail container image without a container engine: the same
# image as deploy/Dockerfile, as an OCI image layout.
#
#   1. a Debian bookworm root filesystem with only the runtime libraries
#      (mmdebstrap from the Debian archive; cached under build/image/ and
#      rebuilt only when the package list in this file changes),
#   2. the agent (Node 24, the TypeScript daemon, production npm
#      dependencies, the native addon, the probe object, the offsets
#      database) staged under /opt/gotrail,
#   3. an OCI image with one layer for each, entrypoint `gotrail run`,
#      assembled with umoci.
#
# Output: build/image/oci (OCI image layout, tag gotrail:$VERSION);
# `skopeo copy oci:build/image/oci:VERSION docker://REGISTRY/gotrail:VERSION`
# pushes it. Needs root (mmdebstrap and umoci keep file ownership) and the
# result of deploy/setup.sh (the addon and the probes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="$root/build/image"
version="$(deploy/node -p 'require("./package.json").version')"
step() { printf '\033[1m[image]\033[0m %s\n' "$*"; }

# Runtime libraries only: bash runs the launcher, libstdc++/libgcc run Node
# and the addon, libbpf1/libelf1/zlib1g the addon, ca-certificates TLS exports.
packages=(bash ca-certificates libbpf1 libelf1 zlib1g libstdc++6 libgcc-s1)
suite=bookworm
base_key="$suite ${packages[*]}"
base="$out/rootfs-base"
if [[ ! -f $base.key ]] || [[ "$(cat "$base.key")" != "$base_key" ]]; then
  step "Debian $suite root filesystem (${packages[*]})"
  rm -rf "$base" "$base.key"
  mkdir -p "$out"
  # essential: dpkg's Essential set and what is included, no apt; no
  # documentation, manual pages or locales in an image.
  mmdebstrap --quiet --variant=essential --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt "$1"/var/lib/apt/lists "$1"/var/log/*' \
    "$suite" "$base.tmp"
  mv "$base.tmp" "$base"
  echo "$base_key" > "$base.key"
fi

step "staging /opt/gotrail"
app="$out/app"
bash deploy/stage.sh "$app"

step "OCI image gotrail:$version"
layout="$out/oci"
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci insert --image "$layout:$version" --history.created_by "mmdebstrap $suite ${packages[*]}" "$base" /
umoci insert --image "$layout:$version" --history.created_by "gotrail $version" "$app" /opt/gotrail
umoci config --image "$layout:$version" \
  --config.entrypoint /opt/gotrail/daemon/bin/gotrail --config.cmd run \
  --config.workingdir /opt/gotrail --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.label org.opencontainers.image.title=gotrail \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout "$layout"
size=$(du -sb "$layout/blobs" | cut -f1)
step "built $layout:$version ($((size / 1024 / 1024)) MiB compressed)"
