/**
 * What `gotrail inspect PID` says of a running agent's view (agentView):
 * the answers an agent's /status gives, served over real HTTP.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { agentView } from '../../daemon/cli/inspect.ts';

async function serve(status: number, body: unknown): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'text/plain' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

test('an agent that refuses /status to this address is named as such, not as absent', async () => {
  const { url, server } = await serve(403, '/status answers loopback peers only\n');
  try {
    const v = await agentView(url, 4242);
    assert.equal(v?.state, 'refused');
    assert.match(v?.reason ?? '', /loopback peers only.*--admin-access any/);
  } finally {
    server.close();
  }
});

test("an agent's /status: traced, left out with its reason, or not known to it", async () => {
  const { url, server } = await serve(200, {
    processesTraced: [{ pid: 10 }],
    processesNotTraced: [{ pid: 11, reason: 'the allow-list is full (16 processes, --max-processes)' }],
  });
  try {
    assert.equal((await agentView(url, 10))?.state, 'traced');
    const left = await agentView(url, 11);
    assert.deepEqual([left?.state, left?.reason], ['not traced', 'the allow-list is full (16 processes, --max-processes)']);
    assert.match((await agentView(url, 12))!.reason!, /not a process it traces/);
  } finally {
    server.close();
  }
});

test('no agent at the address: undefined (inspect says it did not ask)', async () => {
  const { url, server } = await serve(200, {});
  server.close();
  await new Promise((r) => server.once('close', r));
  assert.equal(await agentView(url, 1), undefined);
});
