#!/usr/bin/env bash
# Installs gotrail as a systemd service on this host, from a set-up checkout
# (deploy/setup.sh with GOTRAIL_SETUP_SKIP_TESTS=1):
#   /opt/gotrail                       the runtime tree (deploy/stage.sh)
#   /etc/systemd/system/gotrail.service
#   /etc/default/gotrail               GOTRAIL_ARGS and OTEL_* variables (kept if present)
#   /etc/gotrail/config.yaml           the configuration file (kept if present)
# then enables and (re)starts the service when systemd runs this host.
#
#   deploy/systemd/install.sh [--root DIR] [--no-start]
# --root DIR installs into DIR instead of / (an image, a test), never starts.
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest=/
start=1
while (($#)); do
  case "$1" in
    --root) dest="${2:?--root needs a directory}"; start=0; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "usage: $0 [--root DIR] [--no-start]" >&2; exit 2 ;;
  esac
done
dest="${dest%/}"
[[ $(id -u) -eq 0 ]] || { echo "install: run as root" >&2; exit 1; }

# staged beside the old tree, then swapped: a running agent keeps its files
# until the restart below
bash "$src/deploy/stage.sh" "$dest/opt/gotrail.new"
install -D -m 0644 "$src/docs/operations.md" "$dest/opt/gotrail.new/docs/operations.md"
if [[ -d $dest/opt/gotrail ]]; then
  rm -rf "$dest/opt/gotrail.old" && mv "$dest/opt/gotrail" "$dest/opt/gotrail.old"
fi
mv "$dest/opt/gotrail.new" "$dest/opt/gotrail"
rm -rf "$dest/opt/gotrail.old"

install -D -m 0644 "$src/deploy/systemd/gotrail.service" "$dest/etc/systemd/system/gotrail.service"
if [[ ! -e $dest/etc/default/gotrail ]]; then
  # 0600: it is where OTEL_EXPORTER_OTLP_HEADERS (collector credentials) go
  install -D -m 0600 /dev/null "$dest/etc/default/gotrail"
  cat > "$dest/etc/default/gotrail" <<'CONF'
# Environment of the gotrail service (systemctl restart gotrail after a change).
# Extra `gotrail run` flags; they win over /etc/gotrail/config.yaml.
GOTRAIL_ARGS=
# OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318
CONF
fi
if [[ ! -e $dest/etc/gotrail/config.yaml ]]; then
  # 0600: its exporter.otlp.headers may carry collector credentials
  install -D -m 0600 /dev/null "$dest/etc/gotrail/config.yaml"
  cat > "$dest/etc/gotrail/config.yaml" <<'CONF'
# gotrail's configuration (docs/operations.md); reloaded when it changes.
exporter:
  otlp:
    endpoint: http://localhost:4318/v1/traces
CONF
fi

if ((start)) && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable gotrail.service
  systemctl restart gotrail.service
  echo "gotrail installed and started: journalctl -u gotrail -f"
else
  echo "gotrail installed into ${dest:-/}"
fi
