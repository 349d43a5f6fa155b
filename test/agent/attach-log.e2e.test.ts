/**
 * What the log says when a binary is attached: one INFO line per binary
 * naming the probes attached and counting those that do not apply (a
 * net/http server has no gRPC, database or Kafka probe), the details of
 * each probe that does not apply at debug only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent, repoRoot } from '../support/agent-process.ts';
import { startGoServer } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { probes } from '../../daemon/probes/registry.ts';

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('one INFO summary line per attached binary; probes that do not apply are detailed at debug only', { skip: skipUnlessBpf() }, async () => {
  const dir = join(repoRoot, 'build', 'test-attach-log');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const agent = await startAgent(['--include-exe', bin, '--exporter', 'none', '--log-level', 'debug']);
  const server = await startGoServer(bin);
  try {
    await agent.waitTraced(server.pid);
    const summary = await agent.waitFor(new RegExp(`INFO  tracing binary: attached (\\d+) probes \\(([^)]*)\\); (\\d+) not applicable path=${esc(bin)} `));
    const attached = summary[2]!.split(', ');
    assert.equal(Number(summary[1]), attached.length);
    assert.ok(attached.includes('net/http/server'), summary[0]);
    assert.ok(!attached.some((p) => p.startsWith('google.golang.org/grpc')), 'no gRPC probe on a binary without gRPC');
    const notApplicable = Number(summary[3]);
    assert.equal(attached.length + notApplicable, probes.length, 'every probe is attached or counted as not applicable');
    const lines = agent.log().split('\n').filter((l) => l.includes(`path=${bin}`));
    const info = lines.filter((l) => / (INFO|WARN) .*probe/.test(l));
    assert.equal(info.length, 1, `one INFO line about the binary's probes:\n${info.join('\n')}`);
    assert.ok(info[0]!.includes(summary[0]));
    // the details, at debug: one line per probe that does not apply, with its reason
    const details = lines.filter((l) => /DEBUG probe \S+ not attached /.test(l));
    assert.equal(details.length, notApplicable, details.join('\n'));
    assert.ok(details.some((l) => l.includes('probe google.golang.org/grpc/server not attached') && / reason=/.test(l)), details.join('\n'));
  } finally {
    await server.stop();
    assert.equal(await agent.stop(), 0);
  }
});
