/**
 * net/http client: one CLIENT span per request sent through an
 * http.Transport, following the OpenTelemetry HTTP semantic conventions. A
 * request made on a goroutine that is serving a traced request is that
 * request's child (the link is made in BPF).
 */
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_URL_FULL,
} from '@opentelemetry/semantic-conventions';
import { PairedFunction, BpfMaps, BpfPrograms, EventType, HttpClientEventFlags, HttpClientFlags, HTTP_CLIENT_EVENT_SIZE, decodeHttpClientEvent, encodeHttpClientConfig } from '../../../../../generated/layouts.ts';
import { goString, splitHostPort } from '../../../../../spans/go-values.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../tcp-fields.ts';
import { emitProbeSpan, eventBasics, fieldGroup, type EventContext, type ProbeDescriptor, fieldResolved } from '../../../../types.ts';

const F = {
  method: 'net/http.Request.Method',
  url: 'net/http.Request.URL',
  scheme: 'net/url.URL.Scheme',
  host: 'net/url.URL.Host',
  path: 'net/url.URL.Path',
  status: 'net/http.Response.StatusCode',
  pconn: 'net/http.persistConn.conn',
  // HTTP/2 was bundled into net/http (http2*) until Go 1.27, then moved to net/http/internal/http2
  csCcBundled: 'net/http.http2clientStream.cc',
  csIdBundled: 'net/http.http2clientStream.ID',
  ccTconnBundled: 'net/http.http2ClientConn.tconn',
  ccTlsBundled: 'net/http.http2ClientConn.tlsState',
  csCc: 'net/http/internal/http2.clientStream.cc',
  csId: 'net/http/internal/http2.clientStream.ID',
  ccTconn: 'net/http/internal/http2.ClientConn.tconn',
  ccTls: 'net/http/internal/http2.ClientConn.tlsState',
  // Go 1.27's HTTP/2 transport takes a copy of the request (sharing its *url.URL)
  creqUrl: 'net/http/internal/http2.ClientRequest.URL',
  tlsConn: 'crypto/tls.Conn.conn',
} as const;

const LINK_FIELDS = [F.pconn, ...TCP_FIELDS];
const H2_BUNDLED = [F.csCcBundled, F.csIdBundled, F.ccTconnBundled, F.ccTlsBundled];
const H2_INTERNAL = [F.csCc, F.csId, F.ccTconn, F.ccTls, F.creqUrl];
const H2_LINK_LOST = 'HTTP/2 requests are not linked to traced servers on this node';
const NOT_LINKED = 'traced servers on this node are not linked to these requests';
const ROUND_TRIP_ABSENT = 'this program never sends client requests through http.Transport';

export const httpClientProbe: ProbeDescriptor = {
  id: 'net/http/client',
  module: 'std',
  goPackage: 'net/http',
  description: 'net/http client requests (CLIENT spans)',
  functions: [
    { symbol: 'net/http.(*Transport).roundTrip', entryProgram: BpfPrograms.gt_http_client_entry, absentMeans: ROUND_TRIP_ABSENT },
    // where the connection is known: publishes the span for a server on this node
    { symbol: 'net/http.(*persistConn).roundTrip', entryProgram: BpfPrograms.gt_http_client_conn, optional: 'traced servers on this node are not linked to these requests' },
    // where an HTTP/2 request's stream id is known, on the goroutine that writes its headers
    {
      symbol: 'net/http.(*http2clientStream).encodeAndWriteHeaders',
      alternativeSymbols: ['net/http/internal/http2.(*clientStream).encodeAndWriteHeaders'],
      entryProgram: BpfPrograms.gt_http_client_h2_headers,
      optional: H2_LINK_LOST,
    },
  ],
  // A request that succeeds ends at roundTrip's `if err == nil` after its
  // call of (*persistConn).roundTrip, where the HTTP/2 path joins too: a
  // branch, which the kernel emulates, where the RET that follows it would
  // be single-stepped (a second trap per request: 16 against 0.5 µs on a
  // Firecracker VM). Requests that fail, and those that never get that far
  // (no connection, an alternate round tripper), end at the other RETs.
  // Found in Go 1.19 to 1.27; a binary whose code is not exactly that shape
  // gets every RET instead.
  preferredSites: {
    functions: [{
      symbol: 'net/http.(*Transport).roundTrip',
      returnProgram: BpfPrograms.gt_http_client_return,
      atErrCheck: { callee: 'net/http.(*persistConn).roundTrip', program: BpfPrograms.gt_http_client_done },
      absentMeans: ROUND_TRIP_ABSENT,
    }],
    otherwise: [{ symbol: 'net/http.(*Transport).roundTrip', returnProgram: BpfPrograms.gt_http_client_return, absentMeans: ROUND_TRIP_ABSENT }],
  },
  fields: {
    [F.method]: { reads: 'http.request.method' },
    [F.url]: { reads: 'the request URL' },
    [F.scheme]: { reads: 'url.full' },
    [F.host]: { reads: 'server.address, server.port and url.full' },
    [F.path]: { reads: 'url.full' },
    [F.status]: { reads: 'http.response.status_code' },
    [F.pconn]: { reads: 'the connection a request is sent on', optional: NOT_LINKED },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ, optional: NOT_LINKED }),
    [F.csCcBundled]: { reads: 'the HTTP/2 stream\'s connection (Go before 1.27, bundled HTTP/2)', optional: H2_LINK_LOST },
    [F.csIdBundled]: { reads: 'the HTTP/2 stream id (Go before 1.27)', optional: H2_LINK_LOST },
    [F.ccTconnBundled]: { reads: 'the HTTP/2 connection\'s net.Conn (Go before 1.27)', optional: H2_LINK_LOST },
    [F.ccTlsBundled]: { reads: 'whether the HTTP/2 connection is a TLS one (Go before 1.27)', optional: H2_LINK_LOST },
    [F.csCc]: { reads: 'the HTTP/2 stream\'s connection (Go 1.27 and later)', optional: H2_LINK_LOST },
    [F.csId]: { reads: 'the HTTP/2 stream id (Go 1.27 and later)', optional: H2_LINK_LOST },
    [F.ccTconn]: { reads: 'the HTTP/2 connection\'s net.Conn (Go 1.27 and later)', optional: H2_LINK_LOST },
    [F.ccTls]: { reads: 'whether the HTTP/2 connection is a TLS one (Go 1.27 and later)', optional: H2_LINK_LOST },
    [F.creqUrl]: { reads: 'the request\'s URL, shared with the http.Request (Go 1.27 and later)', optional: H2_LINK_LOST },
    [F.tlsConn]: { reads: 'the TCP connection under a TLS one', optional: H2_LINK_LOST },
  },
  alternativeFields: [
    [F.csCcBundled, F.csCc], [F.csIdBundled, F.csId], [F.ccTconnBundled, F.ccTconn], [F.ccTlsBundled, F.ccTls],
    // the bundled HTTP/2 is given the *http.Request itself (its URL is a required field)
    [F.csIdBundled, F.creqUrl],
  ],
  configMap: BpfMaps.gt_http_client_config,
  stateMaps: [BpfMaps.gt_http_client_inflight, BpfMaps.gt_http_client_h2_reqs],
  inflightMaps: [{ map: BpfMaps.gt_http_client_inflight, paired: [PairedFunction.GT_PAIRED_HTTP_CLIENT] }],
  encodeConfig(o, missingOptional) {
    const has = fieldResolved(o, missingOptional);
    const link = LINK_FIELDS.every((f) => !missingOptional.includes(f));
    // one HTTP/2 implementation per binary: the bundled one, or Go 1.27's internal package
    const h2Fields = has(F.csId) ? H2_INTERNAL : H2_BUNDLED;
    const h2 = TCP_FIELDS.every(has) && has(F.tlsConn) && h2Fields.every(has);
    const internal = h2Fields === H2_INTERNAL;
    return encodeHttpClientConfig({
      req_method: o[F.method] ?? 0,
      req_url: o[F.url] ?? 0,
      url_scheme: o[F.scheme] ?? 0,
      url_host: o[F.host] ?? 0,
      url_path: o[F.path] ?? 0,
      resp_status: o[F.status] ?? 0,
      pconn_conn: o[F.pconn] ?? 0,
      flags: HttpClientFlags.GT_HTTP_CLIENT_ENABLED | (link ? HttpClientFlags.GT_HTTP_CLIENT_LINK : 0)
        | (h2 ? HttpClientFlags.GT_HTTP_CLIENT_H2_LINK : 0),
      tcp: tcpOffsets(o),
      h2_req_url: (internal ? o[F.creqUrl] : o[F.url]) ?? 0,
      h2_cs_cc: (internal ? o[F.csCc] : o[F.csCcBundled]) ?? 0,
      h2_cs_id: (internal ? o[F.csId] : o[F.csIdBundled]) ?? 0,
      h2_cc_tconn: (internal ? o[F.ccTconn] : o[F.ccTconnBundled]) ?? 0,
      h2_cc_tls: (internal ? o[F.ccTls] : o[F.ccTlsBundled]) ?? 0,
      tls_conn_conn: o[F.tlsConn] ?? 0,
    });
  },
  eventType: EventType.GT_EVENT_HTTP_CLIENT,
  eventSize: HTTP_CLIENT_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeHttpClientEvent(buf, off);
    const method = goString(ev.method, ev.method_len);
    const basics = eventBasics(ctx, 'http client', ev.hdr.tgid, method);
    if (!basics) return;
    const { resource } = basics;
    const scheme = goString(ev.scheme, ev.scheme_len) || 'http';
    const hostPort = goString(ev.host, ev.host_len);
    const path = goString(ev.path, ev.path_len);
    const { host, port } = splitHostPort(hostPort);
    const failed = (ev.flags & HttpClientEventFlags.GT_HTTP_CLIENT_EVENT_ERROR) !== 0;
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: method,
      [ATTR_SERVER_ADDRESS]: host,
      [ATTR_SERVER_PORT]: port ?? (scheme === 'https' ? 443 : 80),
      [ATTR_URL_FULL]: `${scheme}://${hostPort}${path}`,
    };
    if (ev.status) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = ev.status;
    if (failed) attributes[ATTR_ERROR_TYPE] = 'transport';
    emitProbeSpan(ctx, {
      name: method,
      kind: SpanKind.CLIENT,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      error: failed || ev.status >= 400,
      resource,
      scope: 'net/http',
    });
  },
};
