/** The metrics server's routes, served without BPF: a query string (as a scraper may add) does not change the answer; a wrong method is refused; /status and /calibrate answer loopback peers only unless opened to all. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Counter, Registry } from 'prom-client';
import { isLoopbackAddress, serveMetrics, type AdminAccess } from '../../daemon/agent/metrics.ts';

interface Answer { status: number; body: string; allow?: string; contentType?: string }

/** One request with the given method, its answer read whole. */
function call(port: number, method: string, path: string, host = '127.0.0.1'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path }, (res) => {
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

/**
 * One request written by hand, its request target as given (an absolute-form
 * target, as a client sends through a proxy, which node:http cannot send):
 * the status code and the body.
 */
function rawCall(port: number, method: string, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (text += c));
    s.on('error', reject);
    s.on('end', () => {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(text);
      if (!status) return reject(new Error(`no status line in ${JSON.stringify(text.slice(0, 200))}`));
      const head = text.slice(0, text.indexOf('\r\n\r\n'));
      let body = text.slice(head.length + 4);
      if (/^transfer-encoding: chunked$/im.test(head)) {
        let out = '';
        for (let at = 0; ;) {
          const eol = body.indexOf('\r\n', at);
          const size = parseInt(body.slice(at, eol), 16);
          if (!(size > 0)) break;
          out += body.slice(eol + 2, eol + 2 + size);
          at = eol + 2 + size + 2;
        }
        body = out;
      }
      resolve({ status: Number(status[1]), body });
    });
  });
}

async function withServer(calibrate: (() => Promise<unknown>) | undefined, body: (port: number) => Promise<void>, bind = '127.0.0.1', access?: AdminAccess): Promise<void> {
  const reg = new Registry();
  new Counter({ name: 'gotrail_test_total', help: 'a counter', registers: [reg] }).inc(3);
  const server = await serveMetrics(reg, bind, 0, () => ({ ok: true, detail: 'alive' }), () => ({ processesTraced: [] }), () => ({ ok: false, detail: 'not ready: initial scan not done' }), { ...(calibrate ? { calibrate } : {}), ...(access ? { access } : {}) });
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

test('an absolute-form request target (http://host:port/path, as sent through a proxy) is served as its path', async () => {
  await withServer(undefined, async (port) => {
    const base = `http://127.0.0.1:${port}`;
    for (const target of [`${base}/metrics`, `${base}/metrics?format=prometheus`, `HTTP://localhost:${port}/metrics`]) {
      const r = await rawCall(port, 'GET', target);
      assert.equal(r.status, 200, target);
      assert.match(r.body, /^gotrail_test_total 3$/m, target);
    }
    assert.equal((await rawCall(port, 'GET', `${base}/healthz`)).status, 200);
    assert.equal((await rawCall(port, 'GET', `${base}/readyz`)).status, 503);
    assert.deepEqual(JSON.parse((await rawCall(port, 'GET', `${base}/status`)).body), { processesTraced: [] });
    assert.equal((await rawCall(port, 'POST', `${base}/metrics`)).status, 405);
    for (const target of [`${base}/`, `${base}/metricsx`, `${base}`, '*', 'http://[/metrics']) {
      assert.equal((await rawCall(port, 'GET', target)).status, 404, target);
    }
    // the origin form is unchanged by it
    assert.equal((await rawCall(port, 'GET', '/metrics')).status, 200);
    assert.equal((await rawCall(port, 'GET', '//metrics')).status, 404);
  });
});

/** An address of this host's own interfaces that is not loopback: connecting to it, a local client is a non-loopback peer. */
const external = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4')?.address;

test('/status and POST /calibrate answer loopback peers only by default: another peer gets 403 whatever the method, while /metrics, /healthz and /readyz answer it', { skip: external ? false : 'no non-loopback IPv4 address on this host' }, async () => {
  let calibrations = 0;
  const calibrate = (): Promise<unknown> => Promise.resolve({ run: ++calibrations });
  for (const bind of ['0.0.0.0', '::']) {
    calibrations = 0;
    await withServer(calibrate, async (port) => {
      for (const [method, path] of [['GET', '/status'], ['HEAD', '/status'], ['GET', '/status?x=1'], ['POST', '/status'], ['POST', '/calibrate'], ['GET', '/calibrate']] as const) {
        const r = await call(port, method, path, external);
        assert.equal(r.status, 403, `${method} ${path} from ${external} (server on ${bind})`);
        if (method !== 'HEAD') assert.match(r.body, /answers loopback peers only .*--admin-access any/);
        assert.doesNotMatch(r.body, /processesTraced/);
      }
      // the absolute form names the path too
      assert.equal((await call(port, 'GET', `http://${external}:${port}/status`, external)).status, 403);
      assert.equal(calibrations, 0, 'a refused peer runs nothing');
      assert.match((await call(port, 'GET', '/metrics', external)).body, /^gotrail_test_total 3$/m);
      assert.equal((await call(port, 'GET', '/healthz', external)).status, 200);
      assert.equal((await call(port, 'GET', '/readyz', external)).status, 503);
      assert.equal((await call(port, 'GET', '/nope', external)).status, 404);
      // the same server answers a loopback peer (a shell on the host, kubectl port-forward)
      assert.deepEqual(JSON.parse((await call(port, 'GET', '/status')).body), { processesTraced: [] });
      assert.equal((await call(port, 'POST', '/calibrate')).status, 200);
      assert.equal(calibrations, 1);
      if (bind === '::') assert.equal((await call(port, 'GET', '/status', '::1')).status, 200);
    }, bind);
  }
});

test('--admin-access any: /status and POST /calibrate answer every peer', { skip: external ? false : 'no non-loopback IPv4 address on this host' }, async () => {
  await withServer(() => Promise.resolve({ ok: 1 }), async (port) => {
    assert.deepEqual(JSON.parse((await call(port, 'GET', '/status', external)).body), { processesTraced: [] });
    assert.deepEqual(JSON.parse((await call(port, 'POST', '/calibrate', external)).body), { ok: 1 });
  }, '0.0.0.0', 'any');
});

test('loopback peers: 127.0.0.0/8, ::1 and IPv4-mapped 127.x; nothing else', () => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) assert.equal(isLoopbackAddress(a), true, a);
  for (const a of ['10.0.0.1', '192.0.2.2', '128.0.0.1', '::ffff:10.0.0.1', 'fe80::1', '::', '0.0.0.0', '', undefined]) assert.equal(isLoopbackAddress(a), false, String(a));
});
