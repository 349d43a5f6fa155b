/**
 * End to end: `http.route` from the routers gotrail reads (gorilla/mux, chi,
 * gin), on a real Go server built with Go 1.26 and 1.27 (plain, stripped,
 * PIE; the routers need a newer Go than 1.19). The route is the router's
 * template in its own syntax, sub-routers and groups included; a request no
 * route matched has none; the cardinality bound applies as for ServeMux.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ReceivedSpan } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { httpRequest, startGoServer } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { startBusyLoad } from '../../../../support/busy.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-routers');
const MAX_ROUTES = 8;

const ROUTES: Record<string, { user: string; orders: string; item: string }> = {
  gorilla: { user: '/users/{id}', orders: '/users/{id}/orders', item: '/api/v1/items/{id}' },
  chi: { user: '/users/{id}', orders: '/users/{id}/orders', item: '/api/v1/items/{id}' },
  gin: { user: '/users/:id', orders: '/users/:id/orders', item: '/api/v1/items/:id' },
};

describe('http.route from gorilla/mux, chi and gin, end to end', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**'), '--max-http-routes', String(MAX_ROUTES)]);
  const byPath = (spans: ReceivedSpan[], path: string): ReceivedSpan => {
    const s = spans.find((x) => x.attributes['url.path'] === path);
    assert.ok(s, `a span for ${path}`);
    return s;
  };

  for (const router of ['gorilla', 'chi', 'gin']) {
    const want = ROUTES[router]!;
    for (const tc of ['go1.26', 'go1.27']) {
      for (const v of ['plain', 'stripped', 'pie']) {
        test(`${router}, ${tc} ${v}: the matched route is http.route and names the SERVER span`, async () => {
          const server = await startGoServer(freshCopy(copies, tc, v, 'http-routers'), ['-router', router], { OTEL_SERVICE_NAME: `${router}-${tc}-${v}` });
          try {
            await traced.agent.waitTraced(server.pid);
            const plan: Array<{ path: string; method?: string; status: number; route?: string }> = [
              { path: '/users/42', status: 200, route: want.user },
              { path: '/users/7', status: 200, route: want.user },
              { path: '/users/42/orders', method: 'POST', status: 201, route: want.orders },
              { path: '/api/v1/items/9', status: 200, route: want.item },
              { path: '/nowhere/1', status: 404 },
              // after a request with no route, the next one gets its own
              { path: '/users/8', status: 200, route: want.user },
            ];
            for (const r of plan) {
              const res = await httpRequest(server.url + r.path, { method: r.method });
              assert.equal(res.status, r.status, `${r.path} answered ${res.status}`);
            }
            const spans = await traced.serverSpans(server, plan.length);
            for (const r of plan) {
              const s = byPath(spans, r.path);
              const method = r.method ?? 'GET';
              assert.equal(s.attributes['http.route'], r.route, `http.route of ${r.path}`);
              assert.equal(s.name, r.route ? `${method} ${r.route}` : method, `name of ${r.path}`);
            }
          } finally {
            await server.stop();
          }
        });
      }
    }
  }

  test('concurrent requests on a busy machine: every span has its own request\'s route (routers reuse their contexts from a pool)', async () => {
    const busy = startBusyLoad();
    try {
      for (const router of ['gorilla', 'chi', 'gin']) {
        const want = ROUTES[router]!;
        const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'http-routers'), ['-router', router], { OTEL_SERVICE_NAME: `${router}-concurrent` });
        try {
          await traced.agent.waitTraced(server.pid);
          // three kinds of request interleaved, 30 at a time: a route, another route, no route
          const paths = Array.from({ length: 90 }, (_, i) => [`/users/${i}`, `/api/v1/items/${i}`, `/nowhere/${i}`][i % 3]!);
          for (let i = 0; i < paths.length; i += 30) {
            await Promise.all(paths.slice(i, i + 30).map(async (p) => {
              const res = await httpRequest(server.url + p);
              assert.equal(res.status, p.startsWith('/nowhere') ? 404 : 200, `${p} answered ${res.status}`);
            }));
          }
          const spans = await traced.serverSpans(server, paths.length);
          for (const p of paths) {
            const route = p.startsWith('/users/') ? want.user : p.startsWith('/api/') ? want.item : undefined;
            assert.equal(byPath(spans, p).attributes['http.route'], route, `${router}: http.route of ${p}`);
          }
        } finally {
          await server.stop();
        }
      }
    } finally {
      await busy.stop();
    }
  });

  test('chi, go1.26: past --max-http-routes distinct routes of a service, new routes are left out and counted', async () => {
    const cut = async (): Promise<number> => Number(await traced.metric(/^gotrail_http_routes_cut_total\{reason="cardinality"\} (\d+)/m) ?? 0);
    const before = await cut();
    const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'http-routers'), ['-router', 'chi', '-generated', String(MAX_ROUTES + 4)], { OTEL_SERVICE_NAME: 'chi-bounded' });
    try {
      await traced.agent.waitTraced(server.pid);
      for (let i = 0; i < MAX_ROUTES + 4; i++) assert.equal((await httpRequest(`${server.url}/gen/${i}`)).status, 200);
      const spans = await traced.serverSpans(server, MAX_ROUTES + 4);
      for (let i = 0; i < MAX_ROUTES + 4; i++) {
        const s = byPath(spans, `/gen/${i}`);
        assert.equal(s.attributes['http.route'], i < MAX_ROUTES ? `/gen/${i}` : undefined, `http.route of /gen/${i}`);
      }
      assert.equal((await cut()) - before, 4, 'each route left out is counted');
    } finally {
      await server.stop();
    }
  });
});
