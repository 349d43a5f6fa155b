/**
 * Every bench script answers `--help` (its doc comment and options, exit 0,
 * before any benchmark starts) and refuses an unknown option with one line
 * and exit 2, as `npm run bench -- --help` does: they used to throw
 * ERR_PARSE_ARGS_UNKNOWN_OPTION with a stack trace of Node's internals, and
 * `--rounds abc` ran NaN rounds after the benchmark's set-up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchHelp } from '../../bench/lib/args.ts';
import { repoRoot } from '../support/agent-process.ts';

const node = join(repoRoot, 'deploy', 'node');
const benchDir = join(repoRoot, 'bench');
/** Scripts that read a command line (the others are modules the scripts import). */
const scripts = readdirSync(benchDir)
  .filter((f) => f.endsWith('.ts') && /\bbenchArgs\(|\bparseArgs\(/.test(readFileSync(join(benchDir, f), 'utf8')))
  .sort();

function run(script: string, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(node, [join('bench', script), ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('every bench script parses its arguments through benchArgs', () => {
  assert.ok(scripts.includes('bpf-per-hit.ts') && scripts.includes('run.ts'), scripts.join(' '));
  for (const s of scripts) assert.doesNotMatch(readFileSync(join(benchDir, s), 'utf8'), /\bparseArgs\(/, `bench/${s} calls parseArgs directly`);
});

test('--help prints usage and options and exits 0, for every bench script', () => {
  for (const s of scripts) {
    const r = run(s, '--help');
    assert.equal(r.code, 0, `bench/${s} --help: ${r.err}`);
    assert.match(r.out, new RegExp(`^deploy/node bench/${s.replace('.', '\\.')} \\[options\\]`), `bench/${s}`);
    assert.match(r.out, /\nOptions:\n(?: {2}.*\n)* {2}-h, --help {2}this text\n$/, `bench/${s}`);
    assert.equal(r.err, '', `bench/${s}`);
  }
});

test('an unknown option is one line naming it and --help, exit 2, for every bench script', () => {
  for (const s of scripts) {
    const r = run(s, '--no-such-option');
    assert.equal(r.code, 2, `bench/${s}: ${r.err}`);
    assert.equal(r.err, `bench/${s}: Unknown option '--no-such-option' (see --help)\n`);
    assert.equal(r.out, '');
  }
});

test('a missing value names the option; -h after -- is an argument, not a request for help', () => {
  const r = run('bpf-per-hit.ts', '--go');
  assert.equal(r.code, 2);
  assert.equal(r.err, `bench/bpf-per-hit.ts: Option '--go <value>' argument missing (see --help)\n`);
  const after = run('binary-analysis.ts', '--runs', 'x', '--', '-h');
  assert.notEqual(after.code, 0);
  assert.doesNotMatch(after.out, /Options:/);
});

test('a value that is no number, for an option whose default is one, is refused before the benchmark starts (exit 2)', () => {
  const cases: Array<[string, string[], string]> = [
    ['bpf-per-hit.ts', ['--rounds', 'abc'], '--rounds: expected a number >= 0 (as its default, 3), got "abc"'],
    ['detach-cost.ts', ['--poll-gap-ms=-1'], '--poll-gap-ms: expected a number >= 0 (as its default, 0.2), got "-1"'],
    ['detach-cost.ts', ['--poll-gap-ms', '-1'], "Option '--poll-gap-ms' argument is ambiguous. Did you forget to specify the option argument for '--poll-gap-ms'?"],
    ['run.ts', ['--calls', '1e3'], '--calls: expected a number >= 0 (as its default, 3000), got "1e3"'],
    ['run.ts', ['--scenario', 'http,bogus'], '--scenario bogus: one of http, http-client, http-sql, grpc, sampling, agent-load, attach, pipeline, entry-site'],
    ['run.ts', ['--rounds', '0'], '--rounds: a positive integer'],
  ];
  for (const [script, args, message] of cases) {
    const r = run(script, ...args);
    assert.equal(r.code, 2, `${script} ${args.join(' ')}: ${r.err}`);
    assert.equal(r.err, `bench/${script}: ${message} (see --help)\n`);
  }
});

test('the help lists each option with its default, from the parser configuration', () => {
  const help = benchHelp(join(benchDir, 'run.ts'), {
    allowPositionals: true,
    options: { rounds: { type: 'string', default: '3' }, verbose: { type: 'boolean', short: 'v', default: false }, env: { type: 'string', multiple: true, default: [] } },
  });
  assert.match(help, /^deploy\/node bench\/run\.ts \[options\] \[arguments\]\n\n`npm run bench`: every benchmark/);
  assert.ok(help.endsWith('Options:\n  --rounds VALUE  (default: 3)\n  -v, --verbose\n  --env VALUE  (repeatable)\n  -h, --help  this text\n'), help);
});
