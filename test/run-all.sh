#!/usr/bin/env bash
# Runs every test: type check, lint and format (test/lint.sh), generated-layout
# freshness, then the node:test suites (unit tests and end-to-end tests with
# real eBPF and a real collector).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "[test] type check"
deploy/node node_modules/typescript/bin/tsc -p tsconfig.json
echo "[test] lint and format"
bash test/lint.sh
echo "[test] generated layouts are current"
deploy/node probes/codegen/btf-to-ts.ts --check
echo "[test] test suites"
# one file at a time: the end-to-end suites measure timing on a 2-core machine
exec deploy/node --expose-gc --test --test-concurrency=1 --test-reporter=spec "${@:-test/**/*.test.ts}"
