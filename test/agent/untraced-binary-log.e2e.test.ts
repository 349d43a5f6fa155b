/**
 * A Go program nothing attaches to, run again and again (a cron job, a build
 * tool): the agent says `not tracing binary` once at info, then only at debug,
 * rather than one info line per run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent } from '../support/agent-process.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { setupBinary } from '../programs/programs.ts';

test('a short-lived program no probe applies to, run repeatedly, is reported once at info and then at debug', { skip: skipUnlessBpf() }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gotrail-untraced-'));
  const bin = join(dir, 'no-http-tool');
  copyFileSync(setupBinary('inspect-no-http', 'go1.26', 'plain'), bin);
  const agent = await startAgent(['--exporter', 'none', '--log-level', 'debug', '--include-exe', bin]);
  const verdict = / (INFO|DEBUG) +not tracing binary: none of \d+ probes applies .*path=(\S+)/g;
  const verdicts = (): string[] => [...agent.log().matchAll(verdict)].filter((m) => m[2] === bin).map((m) => m[1]!);
  try {
    // each run exits before the next starts, so the binary has no process
    // left between runs; runs the agent misses (gone before it looked) do not
    // matter: it must report the binary at least twice to be judged
    const deadline = Date.now() + 60_000;
    while (verdicts().length < 3 && Date.now() < deadline) {
      execFileSync(bin);
      await new Promise((r) => setTimeout(r, 300));
    }
    const v = verdicts();
    assert.ok(v.length >= 3, `the binary was reported ${v.length} times in 60 s:\n${agent.log().slice(-3000)}`);
    assert.equal(v[0], 'INFO');
    assert.deepEqual(v.slice(1), v.slice(1).map(() => 'DEBUG'));
  } finally {
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(dir, { recursive: true, force: true });
  }
});
