/**
 * End to end: a net/http client request that http.Transport retries is one
 * CLIENT span. The peer (a raw TCP server in this test) answers only the
 * first request of each connection and closes a kept-alive connection when
 * a second request arrives on it, before answering: the Transport sends the
 * request again on a new connection (a GET is replayable), which answers,
 * or, for a path whose every attempt is dropped, fails. The first attempt's
 * error passes roundTrip's check of `err` without ending the span; the retry's
 * success ends it there, its failure at a RET. Real Go programs of each Go
 * toolchain here, real eBPF, a real collector.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../../../../support/agent-process.ts';
import { attributeText } from '../../../../support/collector.ts';
import { startGoServer, httpRequest } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-http-client-retry');
const cases = [['go1.19', 'plain'], ['go1.26', 'stripped'], ['go1.27', 'pie']] as const;

/**
 * The peer: answers `200 ok` to the first request of each connection (on
 * `/dead`: to none) and closes the connection, unanswered, on any later
 * one. `seen` lists `connection#: path` per request head received.
 */
async function flakyPeer(): Promise<{ url: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  let conns = 0;
  const server: Server = createServer((socket) => {
    const conn = ++conns;
    let requests = 0;
    let head = '';
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      for (let end = head.indexOf('\r\n\r\n'); end >= 0; end = head.indexOf('\r\n\r\n')) {
        const path = head.slice(0, end).split(' ')[1] ?? '';
        head = head.slice(end + 4);
        seen.push(`${conn}: ${path}`);
        if (++requests > 1 || path === '/dead') {
          socket.destroy();
          return;
        }
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

describe('net/http client: a request the Transport retries on a new connection is one CLIENT span', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**')]);

  for (const [tc, v] of cases) {
    test(`${tc} ${v}: a retry that succeeds ends its span once, with its status; one that fails, once, as an error`, async () => {
      const peer = await flakyPeer();
      const server = await startGoServer(freshCopy(copies, tc, v));
      try {
        await traced.agent.waitTraced(server.pid);
        const proxy = (path: string): Promise<{ status: number }> => httpRequest(`${server.url}/proxy?drain=1&to=${encodeURIComponent(peer.url + path)}`);
        // one at a time, so that each request finds the connection the previous one left idle
        assert.equal((await proxy('/first')).status, 200);
        assert.equal((await proxy('/retried')).status, 200);
        assert.equal((await proxy('/dead')).status, 502);
        // the retries happened: each request sent again on a new connection
        assert.deepEqual(peer.seen, ['1: /first', '1: /retried', '2: /retried', '2: /dead', '3: /dead']);

        const clients = await traced.spansOf(server.pid, 'CLIENT', 3, 'one CLIENT span per request, retries included');
        const servers = await traced.spansOf(server.pid, 'SERVER', 3, 'one SERVER span per /proxy request');
        const byPath = (p: string) => clients.filter((c) => c.attributes['url.full'] === `${peer.url}${p}`);
        for (const p of ['/first', '/retried']) {
          const [c, more] = byPath(p);
          assert.ok(c && !more, `one span for ${p}`);
          assert.equal(c.attributes['http.response.status_code'], 200, p);
          assert.notEqual(c.status.code, 'ERROR', p);
          assert.equal(c.attributes['error.type'], undefined, p);
        }
        const [dead, more] = byPath('/dead');
        assert.ok(dead && !more, 'one span for /dead');
        assert.equal(dead.status.code, 'ERROR', 'a request whose retry failed too is an error');
        assert.equal(dead.attributes['error.type'], 'transport');
        assert.equal(dead.attributes['http.response.status_code'], undefined);
        // each CLIENT span is the child of the /proxy request that sent it, and within it in time
        for (const c of clients) {
          const parent = servers.find((s) => s.spanId === c.parentSpanId);
          assert.ok(parent, `${attributeText(c.attributes['url.full'])}: its parent is a SERVER span of the proxy`);
          assert.equal(c.traceId, parent.traceId);
          assert.ok(c.startTimeUnixNano >= parent.startTimeUnixNano && c.endTimeUnixNano <= parent.endTimeUnixNano, 'nested in time');
        }
        const lost = await traced.metric(/^gotrail_events_lost_total\{[^}]*reason="no_entry"[^}]*\} (\d+)/m);
        assert.ok(lost === undefined || lost === '0', `no end found without its start: ${lost}`);
      } finally {
        await server.stop();
        await peer.close();
      }
    });
  }
});
