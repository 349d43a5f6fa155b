/**
 * HTTP/2 linking on the real test binaries: the fields it needs resolve from
 * each Go version's own type metadata (bundled http2* before Go 1.27,
 * net/http/internal/http2 from 1.27), and one missing field turns off the
 * HTTP/2 linking alone, with the reason `inspect` prints.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openGoBinary } from '../../../../../daemon/analysis/go-binary.ts';
import { planProbe, GOID_FIELD } from '../../../../../daemon/agent/binary-plan.ts';
import { httpClientProbe } from '../../../../../daemon/probes/go/net/http/client/descriptor.ts';
import { httpServerProbe } from '../../../../../daemon/probes/go/net/http/server/descriptor.ts';
import { decodeHttpClientConfig, decodeHttpServerConfig, HttpClientFlags, HttpServerFlags } from '../../../../../daemon/generated/layouts.ts';
import { repoRoot } from '../../../../support/agent-process.ts';

const bin = (tc: string): string => join(repoRoot, 'build', 'go', tc, 'stripped', 'httpserver');
const skip = ['go1.19', 'go1.26', 'go1.27'].some((tc) => !existsSync(bin(tc))) ? 'test programs not built: run bash deploy/setup.sh' : false;

/** Plans `probe` on a stripped binary with offsets from its type metadata only, `drop` removed. */
function plan(tc: string, probe: typeof httpClientProbe, drop?: string): ReturnType<typeof planProbe> & { symbols: string[] } {
  const b = openGoBinary(bin(tc));
  try {
    const wanted = [GOID_FIELD, ...Object.keys(probe.fields)];
    const types = b.goTypes().fieldOffsets(wanted).offsets;
    if (drop) types.delete(drop);
    const p = planProbe(b, probe, { types, only: 'types' }, types.get(GOID_FIELD));
    return { ...p, symbols: p.sites.map((s) => s.symbol) };
  } finally {
    b.close();
  }
}

for (const tc of ['go1.19', 'go1.26', 'go1.27']) {
  test(`${tc}: HTTP/2 linking resolves on both sides from the type metadata of a stripped binary`, { skip }, () => {
    const client = plan(tc, httpClientProbe);
    assert.ok(client.attachable, client.reason);
    assert.deepEqual(client.degraded, []);
    const headers = tc === 'go1.27' ? 'net/http/internal/http2.(*clientStream).encodeAndWriteHeaders' : 'net/http.(*http2clientStream).encodeAndWriteHeaders';
    assert.ok(client.symbols.includes(headers), `probes ${headers}`);
    const cfg = decodeHttpClientConfig(httpClientProbe.encodeConfig(client.offsets, client.missingOptional));
    assert.ok(cfg.flags & HttpClientFlags.GT_HTTP_CLIENT_H2_LINK);
    assert.equal(cfg.h2_req_url, tc === 'go1.27' ? 32 : 16, 'ClientRequest.URL from Go 1.27, Request.URL before');
    assert.equal(cfg.h2_cs_id, 40);

    const server = plan(tc, httpServerProbe);
    assert.ok(server.attachable, server.reason);
    assert.deepEqual(server.degraded, []);
    const scfg = decodeHttpServerConfig(httpServerProbe.encodeConfig(server.offsets, server.missingOptional));
    assert.ok(scfg.flags & HttpServerFlags.GT_HTTP_SERVER_H2_LINK);
    assert.equal(scfg.h2_stream_id, 8);
  });
}

test('one missing HTTP/2 field turns off HTTP/2 linking alone, and says why', { skip }, () => {
  const client = plan('go1.26', httpClientProbe, 'net/http.http2clientStream.ID');
  assert.ok(client.attachable);
  // (its Go 1.27 counterparts are reported with it: neither name resolves)
  for (const d of client.degraded) assert.match(d, /^HTTP\/2 requests are not linked to traced servers on this node: no offset for /);
  assert.ok(client.degraded.some((d) => d.includes('no offset for net/http.http2clientStream.ID at go1.26')), client.degraded.join('\n'));
  const cfg = decodeHttpClientConfig(httpClientProbe.encodeConfig(client.offsets, client.missingOptional));
  assert.equal(cfg.flags & HttpClientFlags.GT_HTTP_CLIENT_H2_LINK, 0);
  assert.ok(cfg.flags & HttpClientFlags.GT_HTTP_CLIENT_LINK, 'HTTP/1 linking stays on');

  const server = plan('go1.27', httpServerProbe, 'crypto/tls.Conn.conn');
  assert.ok(server.attachable);
  assert.equal(server.degraded.length, 1);
  assert.match(server.degraded[0]!, /^HTTP\/2 requests from traced clients on this node are not linked to them: no offset for crypto\/tls\.Conn\.conn/);
  const scfg = decodeHttpServerConfig(httpServerProbe.encodeConfig(server.offsets, server.missingOptional));
  assert.equal(scfg.flags & HttpServerFlags.GT_HTTP_SERVER_H2_LINK, 0);
  assert.ok(scfg.flags & HttpServerFlags.GT_HTTP_SERVER_LINK, 'HTTP/1 linking stays on');
  assert.ok(scfg.flags & HttpServerFlags.GT_HTTP_SERVER_H2_STATUS, 'HTTP/2 statuses are still read');
});
