// Loading the BPF object while a sampling profiler signals the thread: the
// kernel's verifier gives up with EAGAIN whenever a signal is pending, and
// `node --cpu-prof` sends SIGPROF every millisecond (here every 100 µs), which
// used to fail every attempt at the larger programs and disable the probes.
//
// Run: deploy/node --test test/native/profiler-signal.test.ts   (as root)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../support/agent-process.ts';
import { skipReason } from './support.ts';

test('the BPF object loads under node --cpu-prof (SIGPROF held back during verification)', { skip: skipReason() }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-cpuprof-'));
  try {
    const script = [
      `import { BpfObject } from ${JSON.stringify(join(repoRoot, 'daemon', 'native', 'index.ts'))};`,
      `import { DEFAULT_BPF_OBJECT } from ${JSON.stringify(join(repoRoot, 'daemon', 'agent', 'bpf-runtime.ts'))};`,
      'const obj = new BpfObject(DEFAULT_BPF_OBJECT);',
      'obj.load();',
      'console.log(`loaded ${obj.programNames().length} programs`);',
      'obj.close();',
    ].join('\n');
    const r = spawnSync(join(repoRoot, 'deploy', 'node'), ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', dir, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
    assert.match(r.stdout, /^loaded \d+ programs$/m);
    assert.equal(readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).length, 1, 'the profiler ran');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
