/** The metrics server's routes, served without BPF: a query string (as a scraper may add) does not change the answer; a wrong method is refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { Counter, Registry } from 'prom-client';
import { serveMetrics } from '../../daemon/agent/metrics.ts';

interface Answer { status: number; body: string; allow?: string; contentType?: string }

/** One request with the given method, its answer read whole. */
function call(port: number, method: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({
        status: res.statusCode ?? 0, body,
        ...(res.headers.allow !== undefined ? { allow: res.headers.allow } : {}),
        ...(res.headers['content-type'] !== undefined ? { contentType: res.headers['content-type'] } : {}),
      }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function withServer(calibrate: (() => Promise<unknown>) | undefined, body: (port: number) => Promise<void>): Promise<void> {
  const reg = new Registry();
  new Counter({ name: 'gotrail_test_total', help: 'a counter', registers: [reg] }).inc(3);
  const server = await serveMetrics(reg, '127.0.0.1', 0, () => ({ ok: true, detail: 'alive' }), () => ({ processesTraced: [] }), () => ({ ok: false, detail: 'not ready: initial scan not done' }), calibrate ? { calibrate } : {});
  try {
    await body(server.port);
  } finally {
    await server.close();
  }
}

test('/metrics, /status, /healthz and /readyz answer with or without a query string; other paths are 404', async () => {
  await withServer(undefined, async (port) => {
    const get = async (path: string): Promise<{ status: number; body: string }> => {
      const r = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: r.status, body: await r.text() };
    };
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
    for (const p of ['/', '/metricsx', '/metrics/', '/nope?/metrics', '/calibrate']) assert.equal((await get(p)).status, 404, p);
  });
});

test('HEAD answers as GET without a body; another method on a known path is 405 with Allow; unknown paths stay 404 whatever the method', async () => {
  let calibrations = 0;
  await withServer(() => Promise.resolve({ trapCostSeconds: 6e-6, run: ++calibrations }), async (port) => {
    for (const [path, status, type] of [['/metrics?x=1', 200, /^text\/plain/], ['/status', 200, /^application\/json/], ['/healthz', 200, /^text\/plain/], ['/readyz', 503, /^text\/plain/]] as const) {
      const h = await call(port, 'HEAD', path);
      assert.equal(h.status, status, `HEAD ${path}`);
      assert.equal(h.body, '', `HEAD ${path}`);
      assert.match(h.contentType ?? '', type, `HEAD ${path}`);
      for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
        const r = await call(port, method, path);
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.equal(r.allow, 'GET, HEAD', `${method} ${path}`);
      }
    }
    for (const method of ['GET', 'HEAD', 'PUT', 'DELETE']) {
      const r = await call(port, method, '/calibrate');
      assert.equal(r.status, 405, `${method} /calibrate`);
      assert.equal(r.allow, 'POST', `${method} /calibrate`);
    }
    assert.equal(calibrations, 0, 'a refused method runs nothing');
    const c = await call(port, 'POST', '/calibrate');
    assert.equal(c.status, 200);
    assert.deepEqual(JSON.parse(c.body), { trapCostSeconds: 6e-6, run: 1 });
    for (const method of ['GET', 'POST', 'DELETE']) {
      for (const p of ['/', '/metrics/', '/calibrate/', '/status.json']) {
        const r = await call(port, method, p);
        assert.equal(r.status, 404, `${method} ${p}`);
        assert.equal(r.allow, undefined, `${method} ${p}`);
      }
    }
  });
});
