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
import { BpfMaps, BpfPrograms, EventType, HttpClientEventFlags, HttpClientFlags, HTTP_CLIENT_EVENT_SIZE, decodeHttpClientEvent, encodeHttpClientConfig } from '../../../../../generated/layouts.ts';
import { goString, splitHostPort } from '../../../../../spans/go-values.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../tcp-fields.ts';
import { emitProbeSpan, eventBasics, fieldGroup, type EventContext, type ProbeDescriptor } from '../../../../types.ts';

const F = {
  method: 'net/http.Request.Method',
  url: 'net/http.Request.URL',
  scheme: 'net/url.URL.Scheme',
  host: 'net/url.URL.Host',
  path: 'net/url.URL.Path',
  status: 'net/http.Response.StatusCode',
  pconn: 'net/http.persistConn.conn',
} as const;

const LINK_FIELDS = [F.pconn, ...TCP_FIELDS];
const NOT_LINKED = 'traced servers on this node are not linked to these requests';

export const httpClientProbe: ProbeDescriptor = {
  id: 'net/http/client',
  module: 'std',
  goPackage: 'net/http',
  description: 'net/http client requests (CLIENT spans)',
  functions: [
    { symbol: 'net/http.(*Transport).roundTrip', entryProgram: BpfPrograms.gt_http_client_entry, returnProgram: BpfPrograms.gt_http_client_return, absentMeans: 'this program never sends client requests through http.Transport' },
    // where the connection is known: publishes the span for a server on this node
    { symbol: 'net/http.(*persistConn).roundTrip', entryProgram: BpfPrograms.gt_http_client_conn, optional: 'traced servers on this node are not linked to these requests' },
  ],
  fields: {
    [F.method]: { reads: 'http.request.method' },
    [F.url]: { reads: 'the request URL' },
    [F.scheme]: { reads: 'url.full' },
    [F.host]: { reads: 'server.address, server.port and url.full' },
    [F.path]: { reads: 'url.full' },
    [F.status]: { reads: 'http.response.status_code' },
    [F.pconn]: { reads: 'the connection a request is sent on', optional: NOT_LINKED },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ, optional: NOT_LINKED }),
  },
  configMap: BpfMaps.gt_http_client_config,
  stateMaps: [BpfMaps.gt_http_client_inflight],
  encodeConfig(o, missingOptional) {
    const link = LINK_FIELDS.every((f) => !missingOptional.includes(f));
    return encodeHttpClientConfig({
      req_method: o[F.method] ?? 0,
      req_url: o[F.url] ?? 0,
      url_scheme: o[F.scheme] ?? 0,
      url_host: o[F.host] ?? 0,
      url_path: o[F.path] ?? 0,
      resp_status: o[F.status] ?? 0,
      pconn_conn: o[F.pconn] ?? 0,
      flags: HttpClientFlags.GT_HTTP_CLIENT_ENABLED | (link ? HttpClientFlags.GT_HTTP_CLIENT_LINK : 0),
      tcp: tcpOffsets(o),
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
