/**
 * The launcher (daemon/bin/gotrail) tunes Node's own process with variables
 * (MALLOC_ARENA_MAX, NODE_COMPILE_CACHE) that the programs the agent starts
 * must not inherit, and gives Node its flags.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/agent-process.ts';

const launcher = join(repoRoot, 'daemon', 'bin', 'gotrail');

// Loaded through NODE_OPTIONS into the process the launcher starts: once
// the CLI is done, what Node was started with (its command line and initial
// environment, as /proc shows them) and what a program it starts receives.
const probe = `
process.on('exit', () => {
  const { readFileSync } = process.getBuiltinModule('node:fs');
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const list = (f) => readFileSync(f, 'utf8').split('\\0').filter(Boolean);
  const child = spawnSync('/usr/bin/env', [], { encoding: 'utf8' }).stdout.split('\\n').filter(Boolean);
  process.stderr.write('\\nPROBE' + JSON.stringify({ argv: list('/proc/self/cmdline'), environ: list('/proc/self/environ'), child }) + '\\n');
});
`;

function launch(env: Record<string, string | undefined>): { argv: string[]; environ: string[]; child: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-launcher-'));
  try {
    writeFileSync(join(dir, 'probe.mjs'), probe);
    const base: Record<string, string | undefined> = { ...process.env, MALLOC_ARENA_MAX: undefined, NODE_COMPILE_CACHE: undefined, GOTRAIL_NODE_ONLY_ENV: undefined };
    const r = spawnSync(launcher, ['--help'], { encoding: 'utf8', env: { ...base, ...env, NODE_OPTIONS: `--import ${join(dir, 'probe.mjs')}` } });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(/PROBE(.*)/.exec(r.stderr)![1]!) as { argv: string[]; environ: string[]; child: string[] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the launcher sets MALLOC_ARENA_MAX=1 for Node alone: a program the agent starts does not inherit it', () => {
  const r = launch({});
  assert.ok(r.environ.includes('MALLOC_ARENA_MAX=1'), `Node starts with one malloc arena: ${r.environ.filter((e) => e.startsWith('MALLOC')).join(' ')}`);
  assert.deepEqual(r.child.filter((e) => /^(MALLOC_ARENA_MAX|NODE_COMPILE_CACHE|GOTRAIL_NODE_ONLY_ENV)=/.test(e)), [], 'the child gets none of the launcher\'s variables');
  // Node's own flags: no inspector on SIGUSR1
  assert.ok(r.argv.includes('--disable-sigusr1'), r.argv.join(' '));
});

test('a variable the caller set is the caller\'s: the agent and its children keep it', () => {
  const r = launch({ MALLOC_ARENA_MAX: '4', NODE_COMPILE_CACHE: join(tmpdir(), 'gotrail-launcher-cache') });
  assert.ok(r.environ.includes('MALLOC_ARENA_MAX=4'));
  assert.ok(r.child.includes('MALLOC_ARENA_MAX=4'));
  assert.ok(r.child.includes(`NODE_COMPILE_CACHE=${join(tmpdir(), 'gotrail-launcher-cache')}`));
  assert.deepEqual(r.child.filter((e) => e.startsWith('GOTRAIL_NODE_ONLY_ENV=')), []);
  rmSync(join(tmpdir(), 'gotrail-launcher-cache'), { recursive: true, force: true });
});
