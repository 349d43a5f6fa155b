#!/usr/bin/env bash
# Stages gotrail's runtime tree into DEST (the container image's /opt/gotrail,
# the systemd install's /opt/gotrail): Node.js, the TypeScript daemon, the
# production npm dependencies, the native addon, the probe object and the
# offsets database; nothing to build at run time, no compiler.
# Needs the result of deploy/setup.sh.
#
#   deploy/stage.sh DEST
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: deploy/stage.sh DEST}"
cd "$root"
for f in daemon/native/build/Release/gotrail_native.node build/probes/gotrail.bpf.o; do
  [[ -f $f ]] || { echo "stage: $f is missing: run deploy/setup.sh first" >&2; exit 1; }
done
rm -rf "$dest" && mkdir -p "$dest"
install -D -m 0755 "$(deploy/node -p process.execPath)" "$dest/.tools/node/bin/node"
cp -a package.json package-lock.json daemon offsets-db "$dest/"
rm -rf "$dest/daemon/native/build" "$dest/daemon/native/src"
install -D -m 0644 daemon/native/build/Release/gotrail_native.node "$dest/daemon/native/build/Release/gotrail_native.node"
install -D -m 0644 build/probes/gotrail.bpf.o "$dest/build/probes/gotrail.bpf.o"
install -D -m 0755 deploy/node "$dest/deploy/node"
# the bundle the launcher runs (deploy/bundle.ts) when it is as new as the
# sources; copied after them, so that none is newer in DEST either
if [[ -f build/agent/main.mjs && -z "$(find daemon -name '*.ts' -newer build/agent/main.mjs -print -quit)" ]]; then
  cp -r build/agent "$dest/build/agent"
fi
# production dependencies only, exactly as locked, without install scripts
(cd "$dest" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -f "$dest/package-lock.json"
