/**
 * The net/http server event → span mapping, on hand-built events encoded with
 * the generated layout (the end-to-end test covers real probes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { httpServerProbe, splitHostPort } from '../../../../../daemon/probes/go/net/http/server/descriptor.ts';
import { encodeHttpServerEvent, EventType, HttpEventFlags, HTTP_SERVER_EVENT_SIZE, HttpLimits, HttpRouteLimits, HttpRouteSource, SpanFlags } from '../../../../../daemon/generated/layouts.ts';
import { HttpRouteBound } from '../../../../../daemon/spans/http-route.ts';
import { MonotonicClock } from '../../../../../daemon/spans/clock.ts';
import type { EventContext } from '../../../../../daemon/probes/types.ts';

function field(s: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(s.slice(0, size), 'utf8');
  return b;
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const SPAN = 'a1b2c3d4e5f60718';

function event(o: { method?: string; path?: string; host?: string; remote?: string; status?: number; remoteParent?: boolean; tgid?: number; pathLen?: number; flags?: number; tracestate?: string; tracestateLen?: number; proto?: [number, number]; route?: string; routeLen?: number; routeSource?: number }): Buffer {
  const method = o.method ?? 'GET';
  const path = o.path ?? '/x';
  const host = o.host ?? '127.0.0.1:8080';
  const remote = o.remote ?? '127.0.0.1:51234';
  const buf = Buffer.alloc(HTTP_SERVER_EVENT_SIZE + 8);
  encodeHttpServerEvent({
    hdr: { type: EventType.GT_EVENT_HTTP_SERVER, size: HTTP_SERVER_EVENT_SIZE, tgid: o.tgid ?? 42, binary_id: 1, cpu: 0, goid: 7n },
    start_ns: 1_000_000_000n,
    end_ns: 1_002_500_000n,
    method_len: method.length,
    path_len: o.pathLen ?? Buffer.byteLength(path),
    host_len: host.length,
    remote_len: remote.length,
    status: o.status ?? 200,
    flags: o.flags ?? 0,
    span: {
      trace_id: Buffer.from(TRACE, 'hex'),
      span_id: Buffer.from(SPAN, 'hex'),
      parent_span_id: Buffer.from(o.remoteParent ? PARENT : '0000000000000000', 'hex'),
      flags: SpanFlags.GT_SPAN_SAMPLED | (o.remoteParent ? SpanFlags.GT_SPAN_HAS_PARENT | SpanFlags.GT_SPAN_PARENT_REMOTE : 0),
      reserved: 0,
    },
    method: field(method, HttpLimits.GT_HTTP_METHOD_MAX),
    path: field(path, HttpLimits.GT_HTTP_PATH_MAX),
    host: field(host, HttpLimits.GT_HTTP_HOST_MAX),
    remote: field(remote, HttpLimits.GT_HTTP_REMOTE_MAX),
    tracestate_len: o.tracestate === undefined ? 0 : (o.tracestateLen ?? Buffer.byteLength(o.tracestate)),
    proto_major: o.proto?.[0] ?? 1,
    proto_minor: o.proto?.[1] ?? 1,
    tracestate: field(o.tracestate ?? '', HttpLimits.GT_HTTP_TRACESTATE_MAX),
    route: {
      len: o.route === undefined ? 0 : (o.routeLen ?? Buffer.byteLength(o.route)),
      source: o.route === undefined ? HttpRouteSource.GT_HTTP_ROUTE_NONE : (o.routeSource ?? HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX),
      route: field(o.route ?? '', HttpRouteLimits.GT_HTTP_ROUTE_MAX),
    },
  }, buf, 8);
  return buf;
}

function run(buf: Buffer, known = true, routes = new HttpRouteBound()): { spans: ReadableSpan[]; problems: string[] } {
  const spans: ReadableSpan[] = [];
  const problems: string[] = [];
  const ctx: EventContext = {
    clock: new MonotonicClock(),
    resourceOf: (tgid) => (known ? resourceFromAttributes({ 'service.name': 'svc', 'process.pid': tgid }) : undefined),
    emit: (s) => spans.push(s),
    problem: (r) => problems.push(r),
    routes,
  };
  assert.ok(httpServerProbe.handleEvent !== undefined, 'the server probe decodes events');
  httpServerProbe.handleEvent(buf, 8, ctx);
  return { spans, problems };
}

test('a request becomes one SERVER span with the HTTP semantic-convention attributes', () => {
  const { spans } = run(event({ method: 'POST', path: '/api/orders', host: 'shop.example:8443', remote: '[::1]:40000', status: 201, flags: HttpEventFlags.GT_HTTP_EVENT_TLS_KNOWN }));
  assert.equal(spans.length, 1);
  const s = spans[0]!;
  assert.equal(s.kind, SpanKind.SERVER);
  assert.equal(s.name, 'POST');
  assert.deepEqual(s.attributes, {
    'http.request.method': 'POST', 'url.path': '/api/orders', 'url.scheme': 'http', 'http.response.status_code': 201,
    'network.protocol.version': '1.1', 'server.address': 'shop.example', 'server.port': 8443, 'client.address': '::1', 'client.port': 40000,
  });
  assert.equal(s.status.code, SpanStatusCode.UNSET);
  assert.deepEqual(s.duration, [0, 2_500_000]);
  assert.equal(s.parentSpanContext, undefined);
  assert.equal(s.spanContext().traceId, TRACE, 'ids are the ones the probe made');
  assert.equal(s.spanContext().spanId, SPAN);
  assert.equal(s.instrumentationScope.name, 'gotrail/net/http');
});

test('5xx marks the span as an error; a handler that wrote nothing answered 200', () => {
  assert.equal(run(event({ status: 502 })).spans[0]!.status.code, SpanStatusCode.ERROR);
  assert.equal(run(event({ status: 404 })).spans[0]!.status.code, SpanStatusCode.UNSET);
  assert.equal(run(event({ status: 0 })).spans[0]!.attributes['http.response.status_code'], 200);
});

test('a handler that panicked: an error span without a status code', () => {
  const s = run(event({ status: 0, flags: HttpEventFlags.GT_HTTP_EVENT_PANIC })).spans[0]!;
  assert.equal(s.status.code, SpanStatusCode.ERROR);
  assert.equal(s.attributes['error.type'], 'panic');
  assert.equal(s.attributes['http.response.status_code'], undefined);
});

test('a parent taken from an incoming traceparent is a remote parent in the same trace', () => {
  const s = run(event({ remoteParent: true })).spans[0]!;
  assert.equal(s.spanContext().traceId, TRACE);
  assert.equal(s.parentSpanContext?.spanId, PARENT);
  assert.equal(s.parentSpanContext?.traceId, TRACE);
  assert.equal(s.parentSpanContext?.isRemote, true);
});

test('a path longer than the probe copies is marked truncated', () => {
  const long = '/' + 'a'.repeat(300);
  const s = run(event({ path: long, pathLen: long.length })).spans[0]!;
  assert.equal(String(s.attributes['url.path']).length, HttpLimits.GT_HTTP_PATH_MAX);
  assert.equal(s.attributes['gotrail.url.path.truncated'], true);
});

test('events of unknown processes or without a method are counted, not exported', () => {
  assert.deepEqual(run(event({}), false), { spans: [], problems: ['http server event from an unknown process'] });
  const r = run(event({ method: '' }));
  assert.equal(r.spans.length, 0);
  assert.equal(r.problems.length, 1);
});

test('host:port splitting', () => {
  assert.deepEqual(splitHostPort('example.com:80'), { host: 'example.com', port: 80 });
  assert.deepEqual(splitHostPort('example.com'), { host: 'example.com', port: undefined });
  assert.deepEqual(splitHostPort('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443 });
  assert.deepEqual(splitHostPort('host:99999'), { host: 'host', port: undefined });
});

test('tracestate: carried on the span; a member cut by the probe\'s limit and invalid members are dropped', () => {
  const s = run(event({ remoteParent: true, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' })).spans[0]!;
  assert.equal(s.spanContext().traceState?.serialize(), 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
  // the header was longer than the probe copies: its last, partial member goes
  const long = `a=${'x'.repeat(250)},b=${'y'.repeat(250)},c=${'z'.repeat(100)}`;
  const cut = run(event({ remoteParent: true, tracestate: long, tracestateLen: long.length + 40 })).spans[0]!;
  assert.equal(cut.spanContext().traceState?.serialize(), `a=${'x'.repeat(250)},b=${'y'.repeat(250)}`);
  const bad = run(event({ remoteParent: true, tracestate: 'UPPER=1,ok=2' })).spans[0]!;
  assert.equal(bad.spanContext().traceState?.get('ok'), '2');
  assert.equal(bad.spanContext().traceState?.get('UPPER'), undefined);
  assert.equal(run(event({ remoteParent: true })).spans[0]!.spanContext().traceState, undefined);
});

test('url.scheme from the connection: https over TLS, absent when unknown', () => {
  const tls = HttpEventFlags.GT_HTTP_EVENT_TLS_KNOWN | HttpEventFlags.GT_HTTP_EVENT_TLS;
  assert.equal(run(event({ flags: tls })).spans[0]!.attributes['url.scheme'], 'https');
  assert.equal(run(event({ flags: HttpEventFlags.GT_HTTP_EVENT_TLS_KNOWN })).spans[0]!.attributes['url.scheme'], 'http');
  assert.equal(run(event({})).spans[0]!.attributes['url.scheme'], undefined);
});

test('network.protocol.version from Request.ProtoMajor/ProtoMinor', () => {
  assert.equal(run(event({ proto: [1, 0] })).spans[0]!.attributes['network.protocol.version'], '1.0');
  assert.equal(run(event({ proto: [1, 1] })).spans[0]!.attributes['network.protocol.version'], '1.1');
  assert.equal(run(event({ proto: [2, 0] })).spans[0]!.attributes['network.protocol.version'], '2');
  assert.equal(run(event({ proto: [0, 0] })).spans[0]!.attributes['network.protocol.version'], undefined);
});

test('a hijacked connection: no made-up status', () => {
  const s = run(event({ status: 0, flags: HttpEventFlags.GT_HTTP_EVENT_HIJACKED })).spans[0]!;
  assert.equal(s.attributes['http.response.status_code'], undefined);
  assert.equal(s.status.code, SpanStatusCode.UNSET);
  // a status the handler set through the ResponseWriter before hijacking is the one recorded
  assert.equal(run(event({ status: 101, flags: HttpEventFlags.GT_HTTP_EVENT_HIJACKED })).spans[0]!.attributes['http.response.status_code'], 101);
});

test('methods outside the semantic conventions\' set: _OTHER, span name HTTP', () => {
  const s = run(event({ method: 'PROPFIND' })).spans[0]!;
  assert.equal(s.name, 'HTTP');
  assert.equal(s.attributes['http.request.method'], '_OTHER');
  assert.equal(s.attributes['http.request.method_original'], 'PROPFIND');
});

test('the matched route is http.route and completes the span name; a ServeMux pattern loses its method and host', () => {
  const cases: Array<[string, number, string]> = [
    ['GET /users/{id}', HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX, '/users/{id}'],
    ['shop.example/static/', HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX, '/static/'],
    ['POST api.example/orders/{id}/items', HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX, '/orders/{id}/items'],
    ['/', HttpRouteSource.GT_HTTP_ROUTE_SERVEMUX, '/'],
    ['/users/{id}', HttpRouteSource.GT_HTTP_ROUTE_GORILLA, '/users/{id}'],
    ['/users/:id', HttpRouteSource.GT_HTTP_ROUTE_GIN, '/users/:id'],
  ];
  for (const [raw, source, route] of cases) {
    const s = run(event({ method: 'GET', route: raw, routeSource: source })).spans[0]!;
    assert.equal(s.attributes['http.route'], route, raw);
    assert.equal(s.name, `GET ${route}`, raw);
  }
  const other = run(event({ method: 'PURGE', route: '/cache/{key}', routeSource: HttpRouteSource.GT_HTTP_ROUTE_CHI })).spans[0]!;
  assert.equal(other.name, 'HTTP /cache/{key}');
});

test('no route: the span is named by its method alone, and never gets the raw path as a route', () => {
  const s = run(event({ method: 'GET', path: '/users/42' })).spans[0]!;
  assert.equal(s.name, 'GET');
  assert.equal(s.attributes['http.route'], undefined);
  // a router template without a leading slash is not a path template
  assert.equal(run(event({ route: 'users', routeSource: HttpRouteSource.GT_HTTP_ROUTE_CHI })).spans[0]!.attributes['http.route'], undefined);
});

test('a route longer than the probe copies is left out and counted, never cut short', () => {
  const routes = new HttpRouteBound();
  const long = '/' + 'r'.repeat(200);
  const s = run(event({ route: long, routeLen: long.length }), true, routes).spans[0]!;
  assert.equal(s.attributes['http.route'], undefined);
  assert.equal(s.name, 'GET');
  assert.equal(routes.cut.truncated, 1);
});

test('distinct routes per service are bounded: new routes past the limit are left out and counted, known ones stay', () => {
  const routes = new HttpRouteBound(2);
  const route = (r: string): unknown => run(event({ route: `GET ${r}` }), true, routes).spans[0]!.attributes['http.route'];
  assert.equal(route('/a'), '/a');
  assert.equal(route('/b'), '/b');
  assert.equal(route('/c'), undefined);
  assert.equal(route('/a'), '/a', 'a route already reported keeps being reported');
  assert.equal(routes.cut.cardinality, 1);
  assert.equal(routes.size, 2);
  // the bound is per service
  assert.equal(routes.admit('other', '/c'), '/c');
});

test("chi's joined patterns read as chi's own RoutePattern()", () => {
  const chi = (joined: string): unknown => run(event({ route: joined, routeSource: HttpRouteSource.GT_HTTP_ROUTE_CHI })).spans[0]!.attributes['http.route'];
  assert.equal(chi('/api/v1/*/items/{id}'), '/api/v1/items/{id}');
  assert.equal(chi('/a/*/*/b/'), '/a/b');
  assert.equal(chi('/'), '/');
  assert.equal(chi('/api/*'), '/api/*', 'a mount point without a match below it stays as chi reports it');
});
