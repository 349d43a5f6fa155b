/**
 * google.golang.org/grpc server: one SERVER span per RPC, unary or
 * streaming, following the OpenTelemetry RPC semantic conventions for gRPC.
 * The span lasts from the stream's start to the handler's return (and the
 * status written); its status code is the one the RPC ended with.
 */
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  EventType, GrpcServerEventFlags, GrpcServerFlags, GRPC_SERVER_EVENT_SIZE,
  decodeGrpcServerEvent, encodeGrpcServerConfig,
} from '../../../../../generated/layouts.ts';
import { emitProbeSpan, eventBasics, type EventContext, type ProbeDescriptor } from '../../../../types.ts';
import { goString } from '../../../../../spans/go-values.ts';
import { TCP_FIELDS, tcpOffsets } from '../../../net/http/tcp-fields.ts';
import { GRPC, GRPC_CODES, SERVER_ERROR_CODES, TRANSPORT, serverConnAttributes, splitFullMethod } from '../rpc.ts';

const F = {
  serverStreamStream: `${TRANSPORT}.ServerStream.Stream`,
  method: `${TRANSPORT}.Stream.method`,
  id: `${TRANSPORT}.Stream.id`,
  conn: `${TRANSPORT}.http2Server.conn`,
  statusS: `${GRPC}/internal/status.Status.s`,
  statusCode: 'google.golang.org/genproto/googleapis/rpc/status.Status.Code',
} as const;

const CONN_FIELDS = [F.conn, ...TCP_FIELDS];
const STATUS_FIELDS = [F.statusS, F.statusCode];

export const grpcServerProbe: ProbeDescriptor = {
  id: 'google.golang.org/grpc/server',
  module: GRPC,
  goPackage: GRPC,
  description: 'gRPC server calls (SERVER spans)',
  functions: [
    { symbol: `${GRPC}.(*Server).handleStream`, entryProgram: 'gt_grpc_server_entry', returnProgram: 'gt_grpc_server_return', absentMeans: 'this program never serves gRPC with grpc.Server' },
    // the status the RPC ends with (exported as WriteStatus before v1.69)
    {
      symbol: `${TRANSPORT}.(*http2Server).writeStatus`,
      alternativeSymbols: [`${TRANSPORT}.(*http2Server).WriteStatus`],
      entryProgram: 'gt_grpc_server_status',
      optional: 'gRPC server spans carry no status code',
    },
  ],
  requiredFields: [F.method],
  optionalFields: [F.serverStreamStream, F.id, ...CONN_FIELDS, ...STATUS_FIELDS],
  optionalFieldEffects: {
    // before v1.69 handleStream is given the *transport.Stream itself
    [F.serverStreamStream]: 'none before grpc v1.69 (handleStream is given the Stream itself)',
    [F.id]: 'calls from traced clients on this node are not linked to them',
    ...Object.fromEntries(CONN_FIELDS.map((f) => [f, 'client.*, server.* and network.peer.* are not reported, and calls from traced clients on this node are not linked to them'])),
    ...Object.fromEntries(STATUS_FIELDS.map((f) => [f, 'gRPC server spans carry no status code'])),
  },
  configMap: 'gt_grpc_server_config',
  stateMaps: ['gt_grpc_server_inflight'],
  encodeConfig(o, missingOptional) {
    const has = (f: string): boolean => o[f] !== undefined && !missingOptional.includes(f);
    const conn = CONN_FIELDS.every(has);
    return encodeGrpcServerConfig({
      server_stream_stream: o[F.serverStreamStream] ?? 0,
      stream_method: o[F.method] ?? 0,
      stream_id: o[F.id] ?? 0,
      st_conn: o[F.conn] ?? 0,
      status_s: o[F.statusS] ?? 0,
      status_code: o[F.statusCode] ?? 0,
      flags: GrpcServerFlags.GT_GRPC_SERVER_ENABLED
        | (conn ? GrpcServerFlags.GT_GRPC_SERVER_CONN : 0)
        | (conn && has(F.id) ? GrpcServerFlags.GT_GRPC_SERVER_LINK : 0)
        | (STATUS_FIELDS.every(has) ? GrpcServerFlags.GT_GRPC_SERVER_STATUS : 0),
      reserved: 0,
      tcp: tcpOffsets(o),
    });
  },
  eventType: EventType.GT_EVENT_GRPC_SERVER,
  eventSize: GRPC_SERVER_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeGrpcServerEvent(buf, off);
    const full = goString(ev.method, ev.method_len);
    const basics = eventBasics(ctx, 'grpc server', ev.hdr.tgid, full);
    if (!basics) return;
    const { name, service, method } = splitFullMethod(full);
    const attributes: Attributes = { 'rpc.system': 'grpc' };
    if (service !== undefined) attributes['rpc.service'] = service;
    if (method !== undefined) attributes['rpc.method'] = method;
    const hasStatus = (ev.flags & GrpcServerEventFlags.GT_GRPC_SERVER_EVENT_STATUS) !== 0;
    if (hasStatus) {
      attributes['rpc.grpc.status_code'] = ev.status_code;
      // semconv: error.type is the status code's name when the span is an error
      if (SERVER_ERROR_CODES.has(ev.status_code)) attributes['error.type'] = GRPC_CODES[ev.status_code] ?? String(ev.status_code);
    }
    if (ev.flags & GrpcServerEventFlags.GT_GRPC_SERVER_EVENT_CONN) Object.assign(attributes, serverConnAttributes(ev.conn));
    if (ev.method_len > ev.method.length) attributes['gotrail.rpc.method.truncated'] = true;
    emitProbeSpan(ctx, {
      name,
      kind: SpanKind.SERVER,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      error: hasStatus && SERVER_ERROR_CODES.has(ev.status_code),
      resource: basics.resource,
      scope: GRPC,
    });
  },
};
