/**
 * google.golang.org/grpc client: one CLIENT span per RPC, unary
 * (ClientConn.Invoke) or streaming (ClientConn.NewStream), following the
 * OpenTelemetry RPC semantic conventions for gRPC. A call made on a goroutine
 * that is serving a traced request is that request's child (the link is made
 * in BPF).
 */
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  EventType, GrpcClientEventFlags, GrpcClientFlags, GRPC_CLIENT_EVENT_SIZE,
  decodeGrpcClientEvent, encodeGrpcClientConfig,
} from '../../../../../generated/layouts.ts';
import { emitProbeSpan, eventBasics, type EventContext, type ProbeDescriptor } from '../../../../types.ts';
import { goString, splitHostPort } from '../../../../../spans/go-values.ts';
import { GRPC, GRPC_CODES, splitFullMethod } from '../rpc.ts';

const F = {
  target: `${GRPC}.ClientConn.target`,
  errorS: `${GRPC}/internal/status.Error.s`,
  statusS: `${GRPC}/internal/status.Status.s`,
  statusCode: 'google.golang.org/genproto/googleapis/rpc/status.Status.Code',
} as const;

const STATUS_FIELDS = [F.errorS, F.statusS, F.statusCode];

/**
 * server.address and server.port of a dial target (`host:port`,
 * `dns:///host:port`, `passthrough:///host:port`, `unix:///path`); undefined
 * parts when the target names no host.
 */
export function targetAddress(target: string): { host?: string; port?: number } {
  let rest = target;
  const scheme = /^([a-z][a-z0-9+.-]*):(.*)$/i.exec(target);
  if (scheme && !/^\d+$/.test(scheme[2]!)) {
    if (scheme[1] === 'unix' || scheme[1] === 'unix-abstract') return { host: scheme[2]!.replace(/^\/\//, '') };
    rest = scheme[2]!.replace(/^\/\/[^/]*\//, '');
  }
  const { host, port } = splitHostPort(rest);
  return { ...(host ? { host } : {}), ...(port !== undefined ? { port } : {}) };
}

export const grpcClientProbe: ProbeDescriptor = {
  id: 'google.golang.org/grpc/client',
  module: GRPC,
  goPackage: GRPC,
  description: 'gRPC client calls (CLIENT spans)',
  functions: [
    { symbol: `${GRPC}.newClientStream`, entryProgram: 'gt_grpc_client_entry', absentMeans: 'this program never makes gRPC calls with grpc.ClientConn' },
    // returns the *clientStream itself (newClientStream may wrap it, v1.85 does)
    { symbol: `${GRPC}.newClientStreamWithParams`, returnProgram: 'gt_grpc_client_return', absentMeans: 'this program never makes gRPC calls with grpc.ClientConn' },
    { symbol: `${GRPC}.(*clientStream).finish`, entryProgram: 'gt_grpc_client_finish', absentMeans: 'this program never makes gRPC calls with grpc.ClientConn' },
  ],
  requiredFields: [],
  optionalFields: [F.target, ...STATUS_FIELDS],
  optionalFieldEffects: {
    [F.target]: 'server.address and server.port are not reported',
    ...Object.fromEntries(STATUS_FIELDS.map((f) => [f, 'gRPC client spans carry no status code'])),
  },
  configMap: 'gt_grpc_client_config',
  stateMaps: ['gt_grpc_client_inflight', 'gt_grpc_client_streams'],
  encodeConfig(o, missingOptional) {
    const has = (f: string): boolean => o[f] !== undefined && !missingOptional.includes(f);
    return encodeGrpcClientConfig({
      cc_target: o[F.target] ?? 0,
      error_s: o[F.errorS] ?? 0,
      status_s: o[F.statusS] ?? 0,
      status_code: o[F.statusCode] ?? 0,
      flags: GrpcClientFlags.GT_GRPC_CLIENT_ENABLED
        | (STATUS_FIELDS.every(has) ? GrpcClientFlags.GT_GRPC_CLIENT_STATUS : 0)
        | (has(F.target) ? GrpcClientFlags.GT_GRPC_CLIENT_TARGET : 0),
      reserved: 0,
    });
  },
  eventType: EventType.GT_EVENT_GRPC_CLIENT,
  eventSize: GRPC_CLIENT_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeGrpcClientEvent(buf, off);
    const full = goString(ev.method, ev.method_len);
    const basics = eventBasics(ctx, 'grpc client', ev.hdr.tgid, full);
    if (!basics) return;
    const { name, service, method } = splitFullMethod(full);
    const attributes: Attributes = { 'rpc.system': 'grpc' };
    if (service !== undefined) attributes['rpc.service'] = service;
    if (method !== undefined) attributes['rpc.method'] = method;
    const { host, port } = targetAddress(goString(ev.target, ev.target_len));
    if (host !== undefined) attributes['server.address'] = host;
    if (port !== undefined) attributes['server.port'] = port;
    const failed = (ev.flags & GrpcClientEventFlags.GT_GRPC_CLIENT_EVENT_ERROR) !== 0;
    if (ev.flags & GrpcClientEventFlags.GT_GRPC_CLIENT_EVENT_STATUS) {
      attributes['rpc.grpc.status_code'] = ev.status_code;
      if (ev.status_code !== 0) attributes['error.type'] = GRPC_CODES[ev.status_code] ?? String(ev.status_code);
    } else if (failed) {
      attributes['error.type'] = '_OTHER';
    }
    if (ev.method_len > ev.method.length) attributes['gotrail.rpc.method.truncated'] = true;
    emitProbeSpan(ctx, {
      name,
      kind: SpanKind.CLIENT,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      // semconv: every status but OK makes a client span an error
      error: failed,
      resource: basics.resource,
      scope: GRPC,
    });
  },
};
