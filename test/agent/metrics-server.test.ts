/** The metrics server's routes, served without BPF: a query string (as a scraper may add) does not change the answer. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import { serveMetrics } from '../../daemon/agent/metrics.ts';

test('/metrics, /status, /healthz and /readyz answer with or without a query string; other paths are 404', async () => {
  const reg = new Registry();
  new Counter({ name: 'gotrail_test_total', help: 'a counter', registers: [reg] }).inc(3);
  const server = await serveMetrics(reg, '127.0.0.1', 0, () => ({ ok: true, detail: 'alive' }), () => ({ processesTraced: [] }), () => ({ ok: false, detail: 'not ready: initial scan not done' }));
  const get = async (path: string): Promise<{ status: number; body: string }> => {
    const r = await fetch(`http://127.0.0.1:${server.port}${path}`);
    return { status: r.status, body: await r.text() };
  };
  try {
    for (const q of ['', '?', '?format=prometheus&x=1']) {
      const m = await get(`/metrics${q}`);
      assert.equal(m.status, 200, q);
      assert.match(m.body, /^gotrail_test_total 3$/m);
      const s = await get(`/status${q}`);
      assert.equal(s.status, 200, q);
      assert.deepEqual(JSON.parse(s.body), { processesTraced: [] });
      assert.deepEqual(await get(`/healthz${q}`), { status: 200, body: 'alive\n' });
      assert.deepEqual(await get(`/readyz${q}`), { status: 503, body: 'not ready: initial scan not done\n' });
    }
    for (const p of ['/', '/metricsx', '/metrics/', '/nope?/metrics']) assert.equal((await get(p)).status, 404, p);
  } finally {
    await server.close();
  }
});
