/**
 * google.golang.org/grpc client: one CLIENT span per RPC, unary
 * (ClientConn.Invoke) or streaming (ClientConn.NewStream), following the
 * OpenTelemetry RPC semantic conventions for gRPC. A call made on a goroutine
 * that is serving a traced request is that request's child (the link is made
 * in BPF). A call to a traced gRPC server on this node is published for the
 * server probe by its connection's 4-tuple and HTTP/2 stream id, before its
 * HEADERS frame is written, so the server's span becomes its child.
 */
import { ATTR_ERROR_TYPE, ATTR_RPC_METHOD, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ERROR_TYPE_VALUE_OTHER } from '@opentelemetry/semantic-conventions';
// the RPC keys gotrail's spans carry are incubating in this version of the conventions
import { ATTR_RPC_GRPC_STATUS_CODE, ATTR_RPC_SERVICE, ATTR_RPC_SYSTEM, RPC_SYSTEM_VALUE_GRPC } from '../../../../../spans/semconv.ts';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, GrpcClientEventFlags, GrpcClientFlags, GrpcClientHdrWhere, GRPC_CLIENT_EVENT_SIZE,
  decodeGrpcClientEvent, encodeGrpcClientConfig,
} from '../../../../../generated/layouts.ts';
import { emitProbeSpan, eventBasics, fieldGroup, type EventContext, type ProbeDescriptor, fieldResolved } from '../../../../types.ts';
import { goString, splitHostPort } from '../../../../../spans/go-values.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../../../net/http/tcp-fields.ts';
import { GRPC, GRPC_CODES, TRANSPORT, splitFullMethod } from '../rpc.ts';
import { parseModuleVersion } from '../../../../../offsets/version.ts';

const F = {
  target: `${GRPC}.ClientConn.target`,
  errorS: `${GRPC}/internal/status.Error.s`,
  statusS: `${GRPC}/internal/status.Status.s`,
  statusCode: 'google.golang.org/genproto/googleapis/rpc/status.Status.Code',
  // the request's HEADERS as the loopy writer is given them: clientHeaders from v1.82.1, headerFrame before
  hdrStreamId: `${TRANSPORT}.clientHeaders.streamID`,
  hdrHf: `${TRANSPORT}.clientHeaders.hf`,
  frameStreamId: `${TRANSPORT}.headerFrame.streamID`,
  frameHf: `${TRANSPORT}.headerFrame.hf`,
  loopyFramer: `${TRANSPORT}.loopyWriter.framer`,
  framerWriter: `${TRANSPORT}.framer.writer`,
  bufWriterConn: `${TRANSPORT}.bufWriter.conn`,
  // before v1.53.0 originateStream is given only the stream, whose one queued item is its headerFrame
  strItl: `${TRANSPORT}.outStream.itl`,
  itlHead: `${TRANSPORT}.itemList.head`,
  nodeIt: `${TRANSPORT}.itemNode.it`,
} as const;

const STATUS_FIELDS = [F.errorS, F.statusS, F.statusCode];
const NO_STATUS = 'gRPC client spans carry no status code';
const NOT_LINKED = 'calls to traced gRPC servers on this node are not linked to them (the server starts a new trace)';
const LINK_FIELDS = [F.loopyFramer, F.framerWriter, F.bufWriterConn, ...TCP_FIELDS];

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

/**
 * Where the writer function the probe is attached to is given a new
 * stream's headers: clientHeaderHandler's argument (v1.82.1 and later, where
 * the clientHeaders struct exists), originateStream's second argument
 * (v1.53.0 and later), or the one item queued on its stream (before). A
 * binary without a readable version is taken to be recent.
 */
export function clientHeadersWhere(hasClientHeaders: boolean, moduleVersion: string | undefined): number {
  if (hasClientHeaders) return GrpcClientHdrWhere.GT_GRPC_CLIENT_HDR_ARG2;
  const v = moduleVersion === undefined ? undefined : parseModuleVersion(moduleVersion);
  if (v?.ok === true && v.version.major === 1 && v.version.minor < 53) return GrpcClientHdrWhere.GT_GRPC_CLIENT_HDR_STR_ITEM;
  return GrpcClientHdrWhere.GT_GRPC_CLIENT_HDR_ARG3;
}

export const grpcClientProbe: ProbeDescriptor = {
  id: 'google.golang.org/grpc/client',
  module: GRPC,
  goPackage: GRPC,
  description: 'gRPC client calls (CLIENT spans)',
  functions: [
    { symbol: `${GRPC}.newClientStream`, entryProgram: BpfPrograms.gt_grpc_client_entry, absentMeans: 'this program never makes gRPC calls with grpc.ClientConn' },
    // returns the *clientStream itself (newClientStream may wrap it, v1.85 does)
    // absent before v1.37.0, where newClientStream itself returns the stream: such versions are not traced yet
    {
      symbol: `${GRPC}.newClientStreamWithParams`,
      returnProgram: BpfPrograms.gt_grpc_client_return,
      absentMeans: 'this grpc-go version predates newClientStreamWithParams (added in v1.37.0), whose returned stream the client probe reads: its gRPC calls are not traced',
    },
    { symbol: `${GRPC}.(*clientStream).finish`, entryProgram: BpfPrograms.gt_grpc_client_finish, absentMeans: 'this program never makes gRPC calls with grpc.ClientConn' },
    // node-local linking: the call's header fields (its token), then its stream id on the connection's writer
    { symbol: `${TRANSPORT}.(*http2Client).createHeaderFields`, returnProgram: BpfPrograms.gt_grpc_client_headers, optional: NOT_LINKED },
    // client streams only (headerHandler, which calls originateStream, also carries a server's responses)
    {
      symbol: `${TRANSPORT}.(*loopyWriter).clientHeaderHandler`,
      alternativeSymbols: [`${TRANSPORT}.(*loopyWriter).originateStream`],
      entryProgram: BpfPrograms.gt_grpc_client_originate,
      optional: NOT_LINKED,
    },
  ],
  fields: {
    [F.target]: { reads: 'the dial target, for server.address and server.port', optional: 'server.address and server.port are not reported' },
    [F.errorS]: { reads: 'the status behind the error the call ended with', optional: NO_STATUS },
    [F.statusS]: { reads: 'the status proto, for rpc.grpc.status_code', optional: NO_STATUS },
    [F.statusCode]: { reads: 'the status code, for rpc.grpc.status_code', optional: NO_STATUS },
    [F.hdrStreamId]: { reads: 'the HTTP/2 stream id of a call being opened (v1.82.1 and later)', optional: NOT_LINKED },
    [F.hdrHf]: { reads: "the call's header fields, which identify it to the writer (v1.82.1 and later)", optional: NOT_LINKED },
    [F.frameStreamId]: { reads: 'the HTTP/2 stream id of a call being opened (before v1.82.1)', optional: NOT_LINKED },
    [F.frameHf]: { reads: "the call's header fields, which identify it to the writer (before v1.82.1)", optional: NOT_LINKED },
    [F.loopyFramer]: { reads: "the connection's framer, for the 4-tuple", optional: NOT_LINKED },
    [F.framerWriter]: { reads: "the framer's writer, for the 4-tuple", optional: NOT_LINKED },
    [F.bufWriterConn]: { reads: 'the connection the writer writes to, for the 4-tuple', optional: NOT_LINKED },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ, optional: NOT_LINKED }),
    [F.strItl]: { reads: "a stream's queue, which holds its HEADERS (before v1.53.0)", optional: NOT_LINKED },
    [F.itlHead]: { reads: "the queue's first item (before v1.53.0)", optional: NOT_LINKED },
    [F.nodeIt]: { reads: "the item, the stream's HEADERS (before v1.53.0)", optional: NOT_LINKED },
  },
  alternativeFields: [[F.hdrStreamId, F.frameStreamId], [F.hdrHf, F.frameHf]],
  configMap: BpfMaps.gt_grpc_client_config,
  stateMaps: [BpfMaps.gt_grpc_client_inflight, BpfMaps.gt_grpc_client_streams, BpfMaps.gt_grpc_client_links],
  inflightMaps: [
    { map: BpfMaps.gt_grpc_client_inflight, paired: [PairedFunction.GT_PAIRED_GRPC_CLIENT] },
    { map: BpfMaps.gt_grpc_client_streams, paired: [] },
    { map: BpfMaps.gt_grpc_client_links, paired: [] },
  ],
  encodeConfig(o, missingOptional, moduleVersion) {
    const has = fieldResolved(o, missingOptional);
    // one of each pair, whichever this version's loopy writer is given
    const hdr = has(F.hdrStreamId) && has(F.hdrHf) ? { id: o[F.hdrStreamId]!, hf: o[F.hdrHf]! }
      : has(F.frameStreamId) && has(F.frameHf) ? { id: o[F.frameStreamId]!, hf: o[F.frameHf]! } : undefined;
    const where = clientHeadersWhere(has(F.hdrHf), moduleVersion);
    const link = hdr !== undefined && LINK_FIELDS.every(has) &&
      (where !== GrpcClientHdrWhere.GT_GRPC_CLIENT_HDR_STR_ITEM || [F.strItl, F.itlHead, F.nodeIt].every(has));
    return encodeGrpcClientConfig({
      cc_target: o[F.target] ?? 0,
      error_s: o[F.errorS] ?? 0,
      status_s: o[F.statusS] ?? 0,
      status_code: o[F.statusCode] ?? 0,
      flags: GrpcClientFlags.GT_GRPC_CLIENT_ENABLED
        | (STATUS_FIELDS.every(has) ? GrpcClientFlags.GT_GRPC_CLIENT_STATUS : 0)
        | (has(F.target) ? GrpcClientFlags.GT_GRPC_CLIENT_TARGET : 0)
        | (link ? GrpcClientFlags.GT_GRPC_CLIENT_LINK : 0),
      hdr_stream_id: hdr?.id ?? 0,
      hdr_hf: hdr?.hf ?? 0,
      loopy_framer: o[F.loopyFramer] ?? 0,
      framer_writer: o[F.framerWriter] ?? 0,
      bufwriter_conn: o[F.bufWriterConn] ?? 0,
      tcp: tcpOffsets(o),
      str_itl: o[F.strItl] ?? 0,
      itl_head: o[F.itlHead] ?? 0,
      node_it: o[F.nodeIt] ?? 0,
      hdr_where: where,
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
    const attributes: Attributes = { [ATTR_RPC_SYSTEM]: RPC_SYSTEM_VALUE_GRPC };
    if (service !== undefined) attributes[ATTR_RPC_SERVICE] = service;
    if (method !== undefined) attributes[ATTR_RPC_METHOD] = method;
    const { host, port } = targetAddress(goString(ev.target, ev.target_len));
    if (host !== undefined) attributes[ATTR_SERVER_ADDRESS] = host;
    if (port !== undefined) attributes[ATTR_SERVER_PORT] = port;
    const failed = (ev.flags & GrpcClientEventFlags.GT_GRPC_CLIENT_EVENT_ERROR) !== 0;
    if (ev.flags & GrpcClientEventFlags.GT_GRPC_CLIENT_EVENT_STATUS) {
      attributes[ATTR_RPC_GRPC_STATUS_CODE] = ev.status_code;
      if (ev.status_code !== 0) attributes[ATTR_ERROR_TYPE] = GRPC_CODES[ev.status_code] ?? String(ev.status_code);
    } else if (failed) {
      attributes[ATTR_ERROR_TYPE] = ERROR_TYPE_VALUE_OTHER;
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
