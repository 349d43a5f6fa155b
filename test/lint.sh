#!/usr/bin/env bash
# Lint and format checks, run by test/run-all.sh before the test suites:
# ESLint (typescript-eslint, type-aware; eslint.config.js) over the TypeScript,
# clang-format (.clang-format: kernel style for the eBPF C, Google style for
# the native addon) over the C and C++. Any finding fails.
#
#   bash test/lint.sh          check (npm run lint)
#   bash test/lint.sh --fix    apply clang-format and eslint --fix (npm run format)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fix=0
if [[ ${1:-} == --fix ]]; then fix=1; elif (($#)); then
  echo "usage: bash test/lint.sh [--fix]" >&2
  exit 2
fi

if ! command -v clang-format >/dev/null; then
  echo "lint: clang-format is missing: run bash deploy/setup.sh" >&2
  exit 1
fi

# Tracked and new (not ignored) C/C++ sources: the probes, their test
# fixtures and the native addon.
mapfile -t c_sources < <(git ls-files --cached --others --exclude-standard -- \
  'probes/*.c' 'probes/*.h' 'test/*.bpf.c' 'daemon/native/src/*.cc' 'daemon/native/src/*.h' | sort -u)
ts_targets=(daemon test probes/codegen 'offsets-db/*.ts' 'bench/*.ts' 'deploy/*.ts' eslint.config.js)

status=0
if ((fix)); then
  clang-format -i "${c_sources[@]}"
  deploy/node node_modules/eslint/bin/eslint.js --fix "${ts_targets[@]}" || status=$?
else
  echo "[lint] clang-format (${#c_sources[@]} files)"
  clang-format --dry-run --Werror "${c_sources[@]}" || status=$?
  echo "[lint] eslint"
  deploy/node node_modules/eslint/bin/eslint.js --max-warnings 0 "${ts_targets[@]}" || status=$?
fi
exit "$status"
