/**
 * End to end: `http.route` from net/http.ServeMux patterns (Go 1.22+), on a
 * real Go server built with each toolchain here that has patterns (Go 1.26
 * and 1.27; plain, stripped, PIE), and none on Go 1.19, whose ServeMux has
 * no patterns. The span is named `{method} {route}` and the route is the
 * pattern's path template, never the request's path; distinct routes per
 * service are bounded (`--max-http-routes`), and what is cut is counted.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { attributeText, type ReceivedSpan } from '../../../../support/collector.ts';
import { repoRoot } from '../../../../support/agent-process.ts';
import { httpRequest, startGoServer } from '../../../../support/go-server.ts';
import { skipUnlessBpf } from '../../../../support/privileges.ts';
import { freshCopy, tracedCollector } from '../../../../support/traced-collector.ts';

const skip = skipUnlessBpf();
const copies = join(repoRoot, 'build', 'e2e-routes');
const MAX_ROUTES = 12;

describe('http.route from ServeMux patterns, end to end', { skip }, () => {
  const traced = tracedCollector(['--include-exe', join(copies, '**'), '--max-http-routes', String(MAX_ROUTES)]);
  const byPath = (spans: ReceivedSpan[], path: string): ReceivedSpan => {
    const s = spans.find((x) => x.attributes['url.path'] === path);
    assert.ok(s, `a span for ${path}`);
    return s;
  };

  for (const tc of ['go1.26', 'go1.27']) {
    for (const v of ['plain', 'stripped', 'pie']) {
      test(`${tc} ${v}: the matched pattern's path is http.route and names the span`, async () => {
        const server = await startGoServer(freshCopy(copies, tc, v, 'http-routes'), [], { OTEL_SERVICE_NAME: `routes-${tc}-${v}` });
        try {
          await traced.agent.waitTraced(server.pid);
          const plan: Array<{ path: string; method?: string; host?: string; status: number }> = [
            { path: '/users/42', status: 200 },
            { path: '/users/7', status: 200 },
            { path: '/users/42/orders', method: 'POST', status: 201 },
            { path: '/static/css/site.css', status: 200 },
            { path: '/items/9', host: 'api.example', status: 200 },
            { path: '/nowhere/1', status: 404 },
          ];
          for (const r of plan) {
            const res = await httpRequest(server.url + r.path, { method: r.method, headers: r.host ? { host: r.host } : undefined });
            assert.equal(res.status, r.status, `${r.path} answered ${res.status}`);
          }
          const spans = await traced.serverSpans(server, plan.length);
          const expect = (path: string, name: string, route: string | undefined): void => {
            const s = byPath(spans, path);
            assert.equal(s.name, name, `name of ${path}`);
            assert.equal(s.attributes['http.route'], route, `http.route of ${path}`);
          };
          expect('/users/42', 'GET /users/{id}', '/users/{id}');
          expect('/users/7', 'GET /users/{id}', '/users/{id}');
          expect('/users/42/orders', 'POST /users/{id}/orders', '/users/{id}/orders');
          expect('/static/css/site.css', 'GET /static/', '/static/');
          // a host pattern: the route is its path part
          expect('/items/9', 'GET /items/{id}', '/items/{id}');
          // nothing matched: no route, and never the raw path
          expect('/nowhere/1', 'GET', undefined);
        } finally {
          await server.stop();
        }
      });
    }
  }

  test('go1.26: past --max-http-routes distinct routes of a service, new routes are left out and counted', async () => {
    const before = Number(await traced.metric(/^gotrail_http_routes_cut_total\{reason="cardinality"\} (\d+)/m) ?? 0);
    const server = await startGoServer(freshCopy(copies, 'go1.26', 'plain', 'http-routes'), ['-generated', String(MAX_ROUTES + 5)], { OTEL_SERVICE_NAME: 'routes-bounded' });
    try {
      await traced.agent.waitTraced(server.pid);
      // one request per generated pattern, one at a time (the order the bound sees them in)
      for (let i = 0; i < MAX_ROUTES + 5; i++) assert.equal((await httpRequest(`${server.url}/gen/${i}`)).status, 200);
      const spans = await traced.serverSpans(server, MAX_ROUTES + 5);
      for (let i = 0; i < MAX_ROUTES + 5; i++) {
        const s = byPath(spans, `/gen/${i}`);
        const route = i < MAX_ROUTES ? `/gen/${i}` : undefined;
        assert.equal(s.attributes['http.route'], route, `http.route of /gen/${i}: ${attributeText(s.attributes['http.route'])}`);
        assert.equal(s.name, route ? `GET ${route}` : 'GET');
      }
      const after = Number(await traced.metric(/^gotrail_http_routes_cut_total\{reason="cardinality"\} (\d+)/m));
      assert.equal(after - before, 5, 'each route left out is counted');
    } finally {
      await server.stop();
    }
  });

  test('go1.19 (no patterns) and a Go 1.19 module on Go 1.26 (the pre-1.22 ServeMux): no http.route', async () => {
    for (const tc of ['go1.19', 'go1.26']) {
      const server = await startGoServer(freshCopy(copies, tc, 'plain'), [], { OTEL_SERVICE_NAME: `routes-none-${tc}` });
      try {
        await traced.agent.waitTraced(server.pid);
        assert.equal((await httpRequest(`${server.url}/item/5`)).status, 200);
        const [s] = await traced.serverSpans(server, 1);
        assert.equal(s!.name, 'GET');
        assert.equal(s!.attributes['http.route'], undefined);
      } finally {
        await server.stop();
      }
    }
  });
});
