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
    // left between runs (the agent used to report it anew each time)
    for (let runs = 0; runs < 30 && verdicts().length < 3; runs++) {
      execFileSync(bin);
      await new Promise((r) => setTimeout(r, 300));
    }
    await agent.waitFor(/ not tracing binary: /, 10_000);
    const v = verdicts();
    assert.equal(v[0], 'INFO', agent.log().slice(-3000));
    assert.deepEqual(v.slice(1), v.slice(1).map(() => 'DEBUG'));
  } finally {
    assert.equal(await agent.stop(), 0, agent.log().slice(-3000));
    rmSync(dir, { recursive: true, force: true });
  }
});
