/**
 * net/http server: one SERVER span per request handled by net/http, following
 * the OpenTelemetry HTTP semantic conventions.
 */
import { SpanKind, type Attributes } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import {
  ATTR_CLIENT_ADDRESS, ATTR_CLIENT_PORT, ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_NETWORK_PROTOCOL_VERSION, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_URL_PATH,
  ATTR_URL_SCHEME, HTTP_REQUEST_METHOD_VALUE_OTHER, ATTR_HTTP_ROUTE, ATTR_SERVICE_NAME,
} from '@opentelemetry/semantic-conventions';
import {
  BpfMaps, BpfPrograms, EventHeaderOffsets, EventType, HttpEventFlags, HttpLimits, HttpRouteLimits, HttpRouteOffsets, HttpRouteSource,
  HttpServerEventOffsets, HttpServerFlags, HTTP_SERVER_EVENT_SIZE, encodeHttpServerConfig, HttpServerInflightOffsets, HttpInflightState, PairedFunction,
} from '../../../../../generated/layouts.ts';
import { emitEventSpan, eventResource, fieldGroup, type EventContext, type EventProbe, fieldResolved } from '../../../../types.ts';
import { RepeatedString, splitHostPort } from '../../../../../spans/go-values.ts';
import { routeTemplate } from '../../../../../spans/http-route.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../tcp-fields.ts';

const F = {
  method: 'net/http.Request.Method',
  url: 'net/http.Request.URL',
  host: 'net/http.Request.Host',
  remote: 'net/http.Request.RemoteAddr',
  path: 'net/url.URL.Path',
  status: 'net/http.response.status',
  conn: 'net/http.response.conn',
  header: 'net/http.Request.Header',
  tls: 'net/http.Request.TLS',
  protoMajor: 'net/http.Request.ProtoMajor',
  protoMinor: 'net/http.Request.ProtoMinor',
  hijacked: 'net/http.conn.hijackedv',
  // the header map: runtime.hmap before Go 1.24, swiss tables (internal/runtime/maps) after
  hmapCount: 'runtime.hmap.count',
  hmapFlags: 'runtime.hmap.flags',
  hmapB: 'runtime.hmap.B',
  hmapBuckets: 'runtime.hmap.buckets',
  hmapOldBuckets: 'runtime.hmap.oldbuckets',
  mapUsed: 'internal/runtime/maps.Map.used',
  mapDirPtr: 'internal/runtime/maps.Map.dirPtr',
  mapDirLen: 'internal/runtime/maps.Map.dirLen',
  tableGroups: 'internal/runtime/maps.table.groups',
  groupsData: 'internal/runtime/maps.groupsReference.data',
  groupsMask: 'internal/runtime/maps.groupsReference.lengthMask',
  rwc: 'net/http.conn.rwc',
  server: 'net/http.conn.server',
  // HTTP/2 was bundled into net/http until Go 1.27, then moved to net/http/internal/http2
  h2RwsBundled: 'net/http.http2responseWriter.rws',
  h2StatusBundled: 'net/http.http2responseWriterState.status',
  h2Rws: 'net/http/internal/http2.responseWriter.rws',
  h2Status: 'net/http/internal/http2.responseWriterState.status',
  // an HTTP/2 request's stream and connection, to link it to a traced client on this node
  h2StreamBundled: 'net/http.http2responseWriterState.stream',
  h2StreamIdBundled: 'net/http.http2stream.id',
  h2ConnBundled: 'net/http.http2responseWriterState.conn',
  h2ScConnBundled: 'net/http.http2serverConn.conn',
  h2ScTlsBundled: 'net/http.http2serverConn.tlsState',
  h2Stream: 'net/http/internal/http2.responseWriterState.stream',
  h2StreamId: 'net/http/internal/http2.stream.id',
  h2Conn: 'net/http/internal/http2.responseWriterState.conn',
  h2ScConn: 'net/http/internal/http2.serverConn.conn',
  h2ScTls: 'net/http/internal/http2.serverConn.tlsState',
  tlsConn: 'crypto/tls.Conn.conn',
  // the ServeMux pattern that matched: Request.Pattern from Go 1.23, Request.pat before (Go 1.22)
  pattern: 'net/http.Request.Pattern',
  pat: 'net/http.Request.pat',
  patternStr: 'net/http.pattern.str',
} as const;

const HMAP_FIELDS = [F.hmapCount, F.hmapFlags, F.hmapB, F.hmapBuckets, F.hmapOldBuckets];
const SWISS_FIELDS = [F.mapUsed, F.mapDirPtr, F.mapDirLen, F.tableGroups, F.groupsData, F.groupsMask];
const LINK_FIELDS = [F.conn, F.rwc, ...TCP_FIELDS];
const HTTP1_CHECK_FIELDS = [F.conn, F.server];
const PROTO_FIELDS = [F.protoMajor, F.protoMinor];
const H2_LINK_BUNDLED = [F.h2StreamBundled, F.h2StreamIdBundled, F.h2ConnBundled, F.h2ScConnBundled, F.h2ScTlsBundled];
const H2_LINK_INTERNAL = [F.h2Stream, F.h2StreamId, F.h2Conn, F.h2ScConn, F.h2ScTls];
const NO_TRACEPARENT = 'incoming traceparent headers are not read';
const NOT_LINKED = 'requests from traced clients on this node are not linked to them, and requests gotrail itself sent are traced';
const NO_H2_STATUS = 'HTTP/2 responses carry no status code';
const NO_ROUTE = 'http.route is not reported for ServeMux patterns';
const H2_NOT_LINKED = 'HTTP/2 requests from traced clients on this node are not linked to them';


export { splitHostPort };

export const httpServerProbe: EventProbe = {
  id: 'net/http/server',
  module: 'std',
  goPackage: 'net/http',
  description: 'net/http server requests (SERVER spans)',
  functions: [
    { symbol: 'net/http.serverHandler.ServeHTTP', entryProgram: BpfPrograms.gt_http_server_entry, absentMeans: 'this program never serves requests with http.Server' },
    // the connection's deferred recover: ends the span of a handler that panicked
    { symbol: 'net/http.(*conn).serve.func1', entryProgram: BpfPrograms.gt_http_server_panic, optional: 'requests whose handler panics produce no span' },
  ],
  // A request ends at a CALL made right after its handler returned, which
  // the kernel emulates, rather than at ServeHTTP's RETs, which it
  // single-steps (a second trap per request: 16 against 0.5 µs on a
  // Firecracker VM). Found in Go 1.19 to 1.27; a binary whose code lacks one
  // of these calls gets the RETs (and the HTTP/2 recover's entry) instead.
  preferredSites: {
    functions: [
      // HTTP/1: (*conn).serve asks `c.hijacked()` once per request, right
      // after ServeHTTP and the request context's cancel
      { symbol: 'net/http.(*conn).serve', atCalls: [{ callee: 'net/http.(*conn).hijacked', program: BpfPrograms.gt_http_server_return }], absentMeans: 'this program never serves HTTP/1 requests with http.Server' },
      // HTTP/2: the stream's deferred function calls rw.handlerDone() after a
      // handler that returned, recover() after one that panicked
      {
        symbol: 'net/http.(*http2serverConn).runHandler.func1',
        alternativeSymbols: ['net/http/internal/http2.(*serverConn).runHandler.func1'],
        atCalls: [
          { callee: 'net/http.(*http2responseWriter).handlerDone', alternativeCallees: ['net/http/internal/http2.(*responseWriter).handlerDone'], program: BpfPrograms.gt_http_server_return },
          { callee: 'runtime.gorecover', program: BpfPrograms.gt_http_server_panic },
        ],
        // required here: without it (net/http built with nethttpomithttp2,
        // or a Go whose HTTP/2 server names it otherwise) ServeHTTP's RETs
        // are probed, which end HTTP/2 requests too, if any
      },
    ],
    // golang.org/x/net/http2's server (http2.ConfigureServer) runs its
    // streams' handlers, ServeHTTP among them, from its own runHandler: its
    // requests end at ServeHTTP's RETs only
    unless: ['golang.org/x/net/http2.(*serverConn).runHandler'],
    otherwise: [
      { symbol: 'net/http.serverHandler.ServeHTTP', returnProgram: BpfPrograms.gt_http_server_return, absentMeans: 'this program never serves requests with http.Server' },
      // the HTTP/2 server's own deferred recover, on the stream's goroutine
      // (which ends with it): ends the span of an HTTP/2 handler that panicked;
      // after a handler that returned, the request's record is already gone
      {
        symbol: 'net/http.(*http2serverConn).runHandler.func1',
        alternativeSymbols: ['net/http/internal/http2.(*serverConn).runHandler.func1'],
        entryProgram: BpfPrograms.gt_http_server_panic,
        optional: 'HTTP/2 requests whose handler panics produce no span',
      },
      // the same for golang.org/x/net/http2's server: its stream's deferred
      // closure calls recover() after a handler that panicked (func1 or
      // func2 of runHandler, depending on the Go that compiled it)
      {
        symbol: 'golang.org/x/net/http2.(*serverConn).runHandler.func1',
        alternativeSymbols: ['golang.org/x/net/http2.(*serverConn).runHandler.func2'],
        atCalls: [{ callee: 'runtime.gorecover', program: BpfPrograms.gt_http_server_panic }],
        whenLinked: true,
        optional: 'HTTP/2 requests of golang.org/x/net/http2\'s server whose handler panics produce no span',
      },
    ],
  },
  // golang.org/x/net/http2's server, set up by http2.ConfigureServer, hands
  // net/http's ServeHTTP response writers of its own type, which the probe
  // cannot tell from net/http's HTTP/2 writers: reading them at net/http's
  // offsets would put wrong statuses in spans (h2c.NewHandler's requests
  // never reach ServeHTTP, and leave net/http's own HTTP/2 alone)
  unreadWhere: [{
    linked: 'golang.org/x/net/http2.ConfigureServer',
    fields: [F.h2RwsBundled, F.h2StatusBundled, F.h2Rws, F.h2Status, ...H2_LINK_BUNDLED, ...H2_LINK_INTERNAL],
    loses: `${NO_H2_STATUS}, and ${H2_NOT_LINKED}: golang.org/x/net/http2's server is set up with http2.ConfigureServer, whose response writers reach ServeHTTP too and cannot be told from net/http's`,
  }],
  fields: {
    [F.method]: { reads: 'http.request.method' },
    [F.url]: { reads: 'the request URL, for url.path' },
    [F.host]: { reads: 'server.address and server.port' },
    [F.remote]: { reads: 'client.address and client.port' },
    [F.path]: { reads: 'url.path' },
    [F.status]: { reads: 'http.response.status_code' },
    ...fieldGroup([F.header], { reads: "the request's parsed header, searched for traceparent and tracestate", optional: NO_TRACEPARENT }),
    ...fieldGroup(HMAP_FIELDS, { reads: 'walks the header map (Go before 1.24)', optional: NO_TRACEPARENT }),
    ...fieldGroup(SWISS_FIELDS, { reads: 'walks the header map (Go 1.24 and later, swiss tables)', optional: NO_TRACEPARENT }),
    [F.conn]: { reads: "the response's connection", optional: NOT_LINKED },
    [F.rwc]: { reads: 'the net.Conn, for the 4-tuple', optional: NOT_LINKED },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ, optional: NOT_LINKED }),
    [F.server]: {
      reads: "tells an HTTP/1 response (whose conn names the handler's server) from an HTTP/2 one",
      optional: 'HTTP/2 requests are not told from HTTP/1 ones, so their status code may be misread',
    },
    ...fieldGroup([F.h2RwsBundled, F.h2StatusBundled], { reads: 'the status of an HTTP/2 response (Go before 1.27, bundled HTTP/2)', optional: NO_H2_STATUS }),
    ...fieldGroup([F.h2Rws, F.h2Status], { reads: 'the status of an HTTP/2 response (Go 1.27 and later)', optional: NO_H2_STATUS }),
    [F.tls]: { reads: 'url.scheme (https when the request came over TLS)', optional: 'url.scheme is not reported' },
    ...fieldGroup(PROTO_FIELDS, { reads: 'network.protocol.version', optional: 'network.protocol.version is not reported for HTTP/1.x' }),
    [F.hijacked]: {
      reads: "a hijacked connection's status is not the ResponseWriter's",
      optional: 'a handler that hijacks the connection (WebSocket upgrades) is reported with status 200',
    },
    ...fieldGroup(H2_LINK_BUNDLED, { reads: 'the HTTP/2 stream, its id and connection (Go before 1.27, bundled HTTP/2)', optional: H2_NOT_LINKED }),
    ...fieldGroup(H2_LINK_INTERNAL, { reads: 'the HTTP/2 stream, its id and connection (Go 1.27 and later)', optional: H2_NOT_LINKED }),
    [F.tlsConn]: { reads: 'the TCP connection under a TLS one', optional: H2_NOT_LINKED },
    [F.pattern]: { reads: 'http.route: the ServeMux pattern that matched (Go 1.23 and later)', optional: NO_ROUTE, goSince: '1.22' },
    ...fieldGroup([F.pat, F.patternStr], { reads: 'http.route: the ServeMux pattern that matched (Go 1.22)', optional: NO_ROUTE, goSince: '1.22' }),
  },
  alternativeFields: [
    [F.h2RwsBundled, F.h2Rws], [F.h2StatusBundled, F.h2Status],
    ...H2_LINK_BUNDLED.map((f, i): [string, string] => [f, H2_LINK_INTERNAL[i]!]),
    // a binary has one map implementation: either set walks the header map
    [F.hmapCount, F.mapUsed], [F.hmapB, F.mapDirLen], [F.hmapBuckets, F.mapDirPtr],
    [F.hmapFlags, F.tableGroups], [F.hmapOldBuckets, F.groupsData], [F.hmapBuckets, F.groupsMask],
    // Go 1.22 has the pattern only behind Request.pat
    [F.pattern, F.pat], [F.pattern, F.patternStr],
  ],
  configMap: BpfMaps.gt_http_server_config,
  stateMaps: [BpfMaps.gt_http_server_inflight],
  // a goroutine's record outlives its request, idle until the connection's next one (probes/include/http_route.h)
  inflightMaps: [{
    map: BpfMaps.gt_http_server_inflight,
    paired: [PairedFunction.GT_PAIRED_HTTP_SERVER],
    idle: (v) => v.readUInt32LE(HttpServerInflightOffsets.state) === HttpInflightState.GT_HTTP_INFLIGHT_IDLE,
  }],
  encodeConfig(o, missingOptional) {
    const has = fieldResolved(o, missingOptional);
    const swiss = has(F.header) && SWISS_FIELDS.every(has);
    const hmap = !swiss && has(F.header) && HMAP_FIELDS.every(has);
    const link = LINK_FIELDS.every((f) => !missingOptional.includes(f));
    const check = HTTP1_CHECK_FIELDS.every((f) => !missingOptional.includes(f));
    const either = (bundled: string, internalField: string): number | undefined => (has(bundled) ? o[bundled] : has(internalField) ? o[internalField] : undefined);
    const h2Rws = either(F.h2RwsBundled, F.h2Rws);
    const h2Status = either(F.h2StatusBundled, F.h2Status);
    const h2 = check && h2Rws !== undefined && h2Status !== undefined;
    const tls = has(F.tls);
    const proto = PROTO_FIELDS.every(has);
    const hijack = check && has(F.hijacked);
    // one HTTP/2 implementation per binary: the bundled one, or Go 1.27's internal package
    const internal = has(F.h2StreamId);
    const h2LinkFields = internal ? H2_LINK_INTERNAL : H2_LINK_BUNDLED;
    const h2Link = h2 && TCP_FIELDS.every(has) && has(F.tlsConn) && h2LinkFields.every(has);
    const pattern = has(F.pattern);
    const pat = !pattern && has(F.pat) && has(F.patternStr);
    const h2o = (bundled: string, internalField: string): number => (has(internal ? internalField : bundled) ? o[internal ? internalField : bundled]! : 0);
    return encodeHttpServerConfig({
      req_method: o[F.method] ?? 0,
      req_url: o[F.url] ?? 0,
      req_host: o[F.host] ?? 0,
      req_remote_addr: o[F.remote] ?? 0,
      url_path: o[F.path] ?? 0,
      resp_status: o[F.status] ?? 0,
      resp_conn: o[F.conn] ?? 0,
      req_header: o[F.header] ?? 0,
      map_count: (swiss ? o[F.mapUsed] : o[F.hmapCount]) ?? 0,
      map_flags: o[F.hmapFlags] ?? 0,
      map_b: o[F.hmapB] ?? 0,
      map_buckets: (swiss ? o[F.mapDirPtr] : o[F.hmapBuckets]) ?? 0,
      map_oldbuckets: o[F.hmapOldBuckets] ?? 0,
      map_dir_len: o[F.mapDirLen] ?? 0,
      table_groups: (o[F.tableGroups] ?? 0) + (o[F.groupsData] ?? 0),
      table_mask: (o[F.tableGroups] ?? 0) + (o[F.groupsMask] ?? 0),
      conn_rwc: o[F.rwc] ?? 0,
      conn_server: o[F.server] ?? 0,
      h2_rws: h2Rws ?? 0,
      h2_status: h2Status ?? 0,
      flags: HttpServerFlags.GT_HTTP_SERVER_ENABLED
        | (hmap ? HttpServerFlags.GT_HTTP_SERVER_HEADER_HMAP : 0)
        | (swiss ? HttpServerFlags.GT_HTTP_SERVER_HEADER_SWISS : 0)
        | (link ? HttpServerFlags.GT_HTTP_SERVER_LINK : 0)
        | (check ? HttpServerFlags.GT_HTTP_SERVER_CHECK_HTTP1 : 0)
        | (h2 ? HttpServerFlags.GT_HTTP_SERVER_H2_STATUS : 0)
        | (tls ? HttpServerFlags.GT_HTTP_SERVER_TLS : 0)
        | (proto ? HttpServerFlags.GT_HTTP_SERVER_PROTO : 0)
        | (hijack ? HttpServerFlags.GT_HTTP_SERVER_HIJACK : 0)
        | (h2Link ? HttpServerFlags.GT_HTTP_SERVER_H2_LINK : 0)
        | (pattern ? HttpServerFlags.GT_HTTP_SERVER_PATTERN : 0)
        | (pat ? HttpServerFlags.GT_HTTP_SERVER_PAT : 0),
      req_tls: o[F.tls] ?? 0,
      req_proto_major: o[F.protoMajor] ?? 0,
      req_proto_minor: o[F.protoMinor] ?? 0,
      conn_hijacked: o[F.hijacked] ?? 0,
      tcp: tcpOffsets(o),
      h2_rws_stream: h2o(F.h2StreamBundled, F.h2Stream),
      h2_stream_id: h2o(F.h2StreamIdBundled, F.h2StreamId),
      h2_rws_conn: h2o(F.h2ConnBundled, F.h2Conn),
      h2_sc_conn: h2o(F.h2ScConnBundled, F.h2ScConn),
      h2_sc_tls: h2o(F.h2ScTlsBundled, F.h2ScTls),
      tls_conn_conn: o[F.tlsConn] ?? 0,
      req_pattern: pattern ? o[F.pattern] ?? 0 : 0,
      req_pat: pat ? o[F.pat] ?? 0 : 0,
      pattern_str: pat ? o[F.patternStr] ?? 0 : 0,
      // learned by the probe (see gt_http_server_config)
      http1_itab: 0n,
    });
  },
  eventType: EventType.GT_EVENT_HTTP_SERVER,
  eventSize: HTTP_SERVER_EVENT_SIZE,
  // Read in place (no decoded object, no view per field): the agent's
  // busiest event. bpf-runtime checks the record is HTTP_SERVER_EVENT_SIZE long.
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const method = methods.read(buf, off + O.method, HttpLimits.GT_HTTP_METHOD_MAX, buf.readInt32LE(off + O.method_len));
    const resource = eventResource(ctx, 'http server', buf.readUInt32LE(off + EventHeaderOffsets.tgid), method);
    if (!resource) return;
    const pathLen = buf.readInt32LE(off + O.path_len);
    const path = paths.read(buf, off + O.path, HttpLimits.GT_HTTP_PATH_MAX, pathLen);
    const flags = buf.readUInt32LE(off + O.flags);
    const rawStatus = buf.readUInt32LE(off + O.status);
    const panicked = (flags & HttpEventFlags.GT_HTTP_EVENT_PANIC) !== 0;
    const http2 = (flags & HttpEventFlags.GT_HTTP_EVENT_NOT_HTTP1) !== 0;
    const hijacked = (flags & HttpEventFlags.GT_HTTP_EVENT_HIJACKED) !== 0;
    // A handler that wrote nothing answered 200 — unless it panicked (nothing
    // was answered), hijacked the connection (it answered, e.g. 101, around
    // the ResponseWriter: semconv sets the status only when one is known to
    // have been sent), or it is HTTP/2 and the status could not be read. 1xx
    // informational responses never reach the recorded status: net/http keeps
    // the final one.
    const statusKnown = !hijacked && (!http2 || (flags & HttpEventFlags.GT_HTTP_EVENT_H2_STATUS) !== 0);
    const status = rawStatus === 0 ? (panicked || !statusKnown ? undefined : 200) : rawStatus;
    const known = KNOWN_METHODS.has(method);
    const version = http2 ? '2' : protocolVersion(buf.readUInt16LE(off + O.proto_major), buf.readUInt16LE(off + O.proto_minor));
    hosts.read(buf, off + O.host, HttpLimits.GT_HTTP_HOST_MAX, buf.readInt32LE(off + O.host_len));
    const host = hosts.derived;
    remotes.read(buf, off + O.remote, HttpLimits.GT_HTTP_REMOTE_MAX, buf.readInt32LE(off + O.remote_len));
    const client = remotes.derived;
    const schemeKnown = (flags & HttpEventFlags.GT_HTTP_EVENT_TLS_KNOWN) !== 0;
    const scheme = flags & HttpEventFlags.GT_HTTP_EVENT_TLS ? 'https' : 'http';
    let attributes: Attributes;
    if (known && !panicked && status !== undefined && version && host.host && host.port !== undefined && client.host && client.port !== undefined) {
      // Nearly every request: one object literal with its keys written out,
      // which V8 allocates at its full size at once (~90 bytes); built key by
      // key, as below, it grew its property store twice (~160 bytes, most of
      // it garbage at once). Same keys, same order.
      attributes = schemeKnown
        ? {
          'http.request.method': method, 'url.path': path, 'url.scheme': scheme, 'http.response.status_code': status, 'network.protocol.version': version,
          'server.address': host.host, 'server.port': host.port, 'client.address': client.host, 'client.port': client.port,
        } satisfies Attributes
        : {
          'http.request.method': method, 'url.path': path, 'http.response.status_code': status, 'network.protocol.version': version,
          'server.address': host.host, 'server.port': host.port, 'client.address': client.host, 'client.port': client.port,
        } satisfies Attributes;
    } else {
      attributes = {
        [ATTR_HTTP_REQUEST_METHOD]: known ? method : HTTP_REQUEST_METHOD_VALUE_OTHER,
        [ATTR_URL_PATH]: path,
      };
      if (!known) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = method;
      if (schemeKnown) attributes[ATTR_URL_SCHEME] = scheme;
      if (status !== undefined) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
      if (panicked) attributes[ATTR_ERROR_TYPE] = 'panic';
      if (version) attributes[ATTR_NETWORK_PROTOCOL_VERSION] = version;
      if (host.host) attributes[ATTR_SERVER_ADDRESS] = host.host;
      if (host.port !== undefined) attributes[ATTR_SERVER_PORT] = host.port;
      if (client.host) attributes[ATTR_CLIENT_ADDRESS] = client.host;
      if (client.port !== undefined) attributes[ATTR_CLIENT_PORT] = client.port;
    }
    if (pathLen > HttpLimits.GT_HTTP_PATH_MAX) attributes['gotrail.url.path.truncated'] = true;
    // more distinct header names than the probe searches, none of those searched a traceparent
    if (flags & HttpEventFlags.GT_HTTP_EVENT_HEADERS_UNSEARCHED) attributes['gotrail.traceparent.unsearched'] = true;
    const routeAt = off + O.route;
    const routeLen = buf.readInt32LE(routeAt + HttpRouteOffsets.len);
    const routeSource = buf.readUInt32LE(routeAt + HttpRouteOffsets.source);
    const template = routeLen <= 0 || routeSource === HttpRouteSource.GT_HTTP_ROUTE_NONE
      ? undefined
      : routeTemplate(buf.subarray(routeAt + HttpRouteOffsets.route, routeAt + HttpRouteOffsets.route + HttpRouteLimits.GT_HTTP_ROUTE_MAX), routeLen, routeSource, ctx.routes);
    const route = template === undefined ? undefined : ctx.routes.admit(String(resource.attributes[ATTR_SERVICE_NAME] ?? ''), template);
    if (route !== undefined) attributes[ATTR_HTTP_ROUTE] = route;
    const tracestateLen = buf.readInt32LE(off + O.tracestate_len);

    emitEventSpan(
      ctx, buf, off + O.span, off + O.start_ns, off + O.end_ns,
      // semconv: "{method} {http.route}" where the route is known, else the
      // method; "HTTP" for methods outside the known set
      route === undefined ? (known ? method : 'HTTP') : `${known ? method : 'HTTP'} ${route}`,
      SpanKind.SERVER,
      tracestateLen > 0 ? incomingTraceState(buf.subarray(off + O.tracestate, off + O.tracestate + HttpLimits.GT_HTTP_TRACESTATE_MAX), tracestateLen) : undefined,
      attributes, panicked || (status ?? 0) >= 500, resource, 'net/http',
    );
  },
};

const O = HttpServerEventOffsets;
const methods = new RepeatedString();
// a server's requests mostly go to a few paths (its endpoints, health checks): one string each, and the OTLP encoder's cached field
const paths = new RepeatedString();
const hosts = new RepeatedString(splitHostPort);
const remotes = new RepeatedString(splitHostPort);

/**
 * The incoming tracestate (the first header line, as many bytes as the probe
 * carries) as a validated TraceState: members that do not parse are dropped,
 * as is a member cut by the probe's limit; undefined when nothing is left.
 */
export function incomingTraceState(bytes: Buffer, len: number): TraceState | undefined {
  if (len <= 0) return undefined;
  let raw = bytes.subarray(0, Math.min(len, bytes.length)).toString('latin1');
  if (len > bytes.length) raw = raw.slice(0, Math.max(0, raw.lastIndexOf(',')));
  const ts = new TraceState(raw);
  return ts.serialize() ? ts : undefined;
}

/** The methods HTTP semantic conventions name (RFC 9110, RFC 5789); others are reported as `_OTHER`. */
const KNOWN_METHODS = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE']);

/** `network.protocol.version` from Request.ProtoMajor/ProtoMinor: `1.0`, `1.1`, `2`, `3`; undefined when unknown. */
export function protocolVersion(major: number, minor: number): string | undefined {
  if (major === 0) return undefined;
  return major >= 2 && minor === 0 ? String(major) : `${major}.${minor}`;
}
