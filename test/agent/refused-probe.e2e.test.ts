/**
 * One probe whose BPF program the kernel refuses must not take the agent or
 * the other probes down: the agent loads without it, says why, and traces
 * with the rest.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Agent } from '../../daemon/agent/agent.ts';
import { createExporter } from '../../daemon/export/exporters.ts';
import { createLogger } from '../../daemon/util/log.ts';
import { probes } from '../../daemon/probes/registry.ts';
import type { ProbeDescriptor } from '../../daemon/probes/types.ts';
import type { BpfProgramName } from '../../daemon/generated/layouts.ts';
import { repoRoot } from '../support/agent-process.ts';
import { startGoServer, httpRequest } from '../support/go-server.ts';
import { skipUnlessBpf } from '../support/privileges.ts';
import { until } from '../support/wait.ts';

const dir = join(repoRoot, 'build', 'test-refused-probe');

/** The real probes plus one program the verifier refuses, in one object. */
function buildObject(): string {
  mkdirSync(dir, { recursive: true });
  const src = join(dir, 'all.bpf.c');
  const probesDir = join(repoRoot, 'build', 'probes');
  writeFileSync(src, `#include "${join(probesDir, 'all.bpf.c')}"\n#include "${join(repoRoot, 'test', 'agent', 'fixtures', 'refused.bpf.c')}"\n`);
  const obj = join(dir, 'gotrail.bpf.o');
  execFileSync('clang', ['-target', 'bpf', '-O2', '-g', '-D__TARGET_ARCH_x86', '-I', probesDir, '-I', join(repoRoot, 'probes', 'include'), '-c', src, '-o', obj]);
  return obj;
}

// the first probe's shape, without its sites (its preferred ones included)
const { preferredSites: _sites, ...shape } = probes[0]!;
const refusedProbe: ProbeDescriptor = {
  ...shape,
  id: 'test/refused',
  description: 'a probe the kernel refuses',
  // a program of this test's own object, not of the probes' (hence not in BpfPrograms)
  functions: [{ symbol: 'main.main', entryProgram: 'gt_test_refused' as BpfProgramName }],
  eventType: 250,
};

test('a probe the kernel refuses is left out; the agent and the other probes run', { skip: skipUnlessBpf() }, async () => {
  const object = buildObject();
  const logs: string[] = [];
  const spans: ReadableSpan[] = [];
  const bin = join(dir, 'httpserver');
  copyFileSync(join(repoRoot, 'build', 'go', 'go1.26', 'plain', 'httpserver'), bin);
  const agent = new Agent(createLogger('info', (l) => void logs.push(l)), {
    // the test's own requests are the traced programs' traffic
    skipOwnRequests: false,
    exporter: createExporter({ kind: 'none' }),
    selection: { includeExe: [bin] },
    onSpan: (s) => spans.push(s),
    batcher: { scheduledDelayMillis: 100 },
    bpfObjectPath: object,
    probes: [...probes, refusedProbe],
  });
  await agent.start();
  const server = await startGoServer(bin);
  try {
    const disabled = agent.runtime()!.disabledProbes;
    assert.deepEqual([...disabled.keys()], ['test/refused']);
    assert.match(disabled.get('test/refused')!, /refused its BPF program gt_test_refused/);
    assert.ok(logs.some((l) => /ERROR probe test\/refused disabled/.test(l)), 'said loudly, once');
    await until('traced', () => agent.tracedPids().includes(server.pid));
    await httpRequest(`${server.url}/hello`);
    await agent.flush();
    await until('a span from the probes that loaded', () => spans.some((s) => s.attributes['url.path'] === '/hello'));
    const status = agent.status() as { disabledProbes: Record<string, string> };
    assert.ok(status.disabledProbes['test/refused']);
  } finally {
    await server.stop();
    await agent.stop();
  }
});
