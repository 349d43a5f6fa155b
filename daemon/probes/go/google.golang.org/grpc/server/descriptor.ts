/**
 * google.golang.org/grpc server: one SERVER span per RPC, unary or
 * streaming, following the OpenTelemetry RPC semantic conventions for gRPC.
 * The span lasts from the stream's start to the handler's return (and the
 * status written); its status code is the one the RPC ended with. Its
 * parent is, first, the CLIENT span of a traced caller on this node (found
 * by connection and HTTP/2 stream id), else the call's incoming
 * `traceparent` metadata (with `tracestate`), else none.
 */
import { ATTR_ERROR_TYPE, ATTR_RPC_METHOD } from '@opentelemetry/semantic-conventions';
// the RPC keys gotrail's spans carry are incubating in this version of the conventions
import { ATTR_RPC_GRPC_STATUS_CODE, ATTR_RPC_SERVICE, ATTR_RPC_SYSTEM, RPC_SYSTEM_VALUE_GRPC } from '../../../../../spans/semconv.ts';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, GrpcServerEventFlags, GrpcServerFlags, GRPC_SERVER_EVENT_SIZE,
  decodeGrpcServerEvent, encodeGrpcServerConfig,
} from '../../../../../generated/layouts.ts';
import { emitProbeSpan, eventBasics, fieldGroup, type EventContext, type ProbeDescriptor, fieldResolved } from '../../../../types.ts';
import { goString } from '../../../../../spans/go-values.ts';
import { TCP_FIELDS, TCP_FIELDS_READ, tcpOffsets } from '../../../net/http/tcp-fields.ts';
import { incomingTraceState } from '../../../net/http/server/descriptor.ts';
import { parseModuleVersion } from '../../../../../offsets/version.ts';
import { GRPC, GRPC_CODES, SERVER_ERROR_CODES, TRANSPORT, serverConnAttributes, splitFullMethod } from '../rpc.ts';

const F = {
  serverStreamStream: `${TRANSPORT}.ServerStream.Stream`,
  method: `${TRANSPORT}.Stream.method`,
  id: `${TRANSPORT}.Stream.id`,
  conn: `${TRANSPORT}.http2Server.conn`,
  statusS: `${GRPC}/internal/status.Status.s`,
  statusCode: 'google.golang.org/genproto/googleapis/rpc/status.Status.Code',
  // the call's HEADERS as grpc-go's HTTP/2 framer decoded them
  mhfHeadersFrame: 'golang.org/x/net/http2.MetaHeadersFrame.HeadersFrame',
  mhfFields: 'golang.org/x/net/http2.MetaHeadersFrame.Fields',
  hfFrameHeader: 'golang.org/x/net/http2.HeadersFrame.FrameHeader',
  fhStreamId: 'golang.org/x/net/http2.FrameHeader.StreamID',
  fieldName: 'golang.org/x/net/http2/hpack.HeaderField.Name',
  fieldValue: 'golang.org/x/net/http2/hpack.HeaderField.Value',
} as const;

const CONN_FIELDS = [F.conn, ...TCP_FIELDS];
const STATUS_FIELDS = [F.statusS, F.statusCode];
const NOT_LINKED = 'calls from traced clients on this node are not linked to them';
const NO_CONN = `client.*, server.* and network.peer.* are not reported, and ${NOT_LINKED}`;
const NO_STATUS = 'gRPC server spans carry no status code';
const NO_TRACEPARENT = "an incoming traceparent in a call's metadata is not used (the call starts a new trace)";
const HEADER_FIELDS = [F.mhfHeadersFrame, F.mhfFields, F.hfFrameHeader, F.fhStreamId, F.fieldName, F.fieldValue, F.id];

/**
 * operateHeaders takes a context first from grpc v1.60.0 (the frame moves
 * from the second argument to the fourth register). A binary without a
 * readable version (a module built from a local checkout) is taken to be
 * recent.
 */
export function operateHeadersTakesContext(moduleVersion: string | undefined): boolean {
  const v = moduleVersion === undefined ? undefined : parseModuleVersion(moduleVersion);
  if (v?.ok !== true) return true;
  return v.version.major > 1 || v.version.minor >= 60;
}

export const grpcServerProbe: ProbeDescriptor = {
  id: 'google.golang.org/grpc/server',
  module: GRPC,
  goPackage: GRPC,
  description: 'gRPC server calls (SERVER spans)',
  functions: [
    { symbol: `${GRPC}.(*Server).handleStream`, entryProgram: BpfPrograms.gt_grpc_server_entry, returnProgram: BpfPrograms.gt_grpc_server_return, absentMeans: 'this program never serves gRPC with grpc.Server' },
    // the status the RPC ends with (exported as WriteStatus before v1.69)
    {
      symbol: `${TRANSPORT}.(*http2Server).writeStatus`,
      alternativeSymbols: [`${TRANSPORT}.(*http2Server).WriteStatus`],
      entryProgram: BpfPrograms.gt_grpc_server_status,
      optional: NO_STATUS,
    },
    // the call's HEADERS, for an incoming traceparent
    { symbol: `${TRANSPORT}.(*http2Server).operateHeaders`, entryProgram: BpfPrograms.gt_grpc_server_headers, optional: NO_TRACEPARENT },
  ],
  fields: {
    [F.method]: { reads: 'the full method name, for the span name, rpc.service and rpc.method' },
    // before v1.69 handleStream is given the *transport.Stream itself
    [F.serverStreamStream]: {
      reads: 'the Stream of the ServerStream handleStream is given (v1.69.0 and later)',
      optional: 'none before grpc v1.69 (handleStream is given the Stream itself)',
    },
    [F.id]: { reads: 'the HTTP/2 stream id, to link the call to a traced client on this node', optional: NOT_LINKED },
    [F.conn]: { reads: "the transport's net.Conn, for the 4-tuple", optional: NO_CONN },
    ...fieldGroup(TCP_FIELDS, { reads: TCP_FIELDS_READ, optional: NO_CONN }),
    [F.statusS]: { reads: 'the status proto behind the status written, for rpc.grpc.status_code', optional: NO_STATUS },
    [F.statusCode]: { reads: 'the status code, for rpc.grpc.status_code', optional: NO_STATUS },
    [F.mhfHeadersFrame]: { reads: "the HEADERS frame of a call's decoded headers, for its stream id", optional: NO_TRACEPARENT },
    [F.mhfFields]: { reads: "a call's decoded header fields, searched for traceparent and tracestate", optional: NO_TRACEPARENT },
    [F.hfFrameHeader]: { reads: "the HEADERS frame's header, for its stream id", optional: NO_TRACEPARENT },
    [F.fhStreamId]: { reads: 'the stream id the HEADERS open, to hand the traceparent to the stream', optional: NO_TRACEPARENT },
    [F.fieldName]: { reads: "a header field's name", optional: NO_TRACEPARENT },
    [F.fieldValue]: { reads: "a header field's value (traceparent and tracestate only)", optional: NO_TRACEPARENT },
  },
  configMap: BpfMaps.gt_grpc_server_config,
  stateMaps: [BpfMaps.gt_grpc_server_inflight, BpfMaps.gt_grpc_server_incoming],
  inflightMaps: [{ map: BpfMaps.gt_grpc_server_inflight, paired: [PairedFunction.GT_PAIRED_GRPC_SERVER] }, { map: BpfMaps.gt_grpc_server_incoming, paired: [] }],
  encodeConfig(o, missingOptional, moduleVersion) {
    const has = fieldResolved(o, missingOptional);
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
        | (STATUS_FIELDS.every(has) ? GrpcServerFlags.GT_GRPC_SERVER_STATUS : 0)
        | (HEADER_FIELDS.every(has) ? GrpcServerFlags.GT_GRPC_SERVER_HEADERS : 0)
        | (operateHeadersTakesContext(moduleVersion) ? GrpcServerFlags.GT_GRPC_SERVER_HEADERS_CTX : 0),
      reserved: 0,
      tcp: tcpOffsets(o),
      mhf_headers_frame: o[F.mhfHeadersFrame] ?? 0,
      mhf_fields: o[F.mhfFields] ?? 0,
      hf_frame_header: o[F.hfFrameHeader] ?? 0,
      fh_stream_id: o[F.fhStreamId] ?? 0,
      field_name: o[F.fieldName] ?? 0,
      field_value: o[F.fieldValue] ?? 0,
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
    const attributes: Attributes = { [ATTR_RPC_SYSTEM]: RPC_SYSTEM_VALUE_GRPC };
    if (service !== undefined) attributes[ATTR_RPC_SERVICE] = service;
    if (method !== undefined) attributes[ATTR_RPC_METHOD] = method;
    const hasStatus = (ev.flags & GrpcServerEventFlags.GT_GRPC_SERVER_EVENT_STATUS) !== 0;
    if (hasStatus) {
      attributes[ATTR_RPC_GRPC_STATUS_CODE] = ev.status_code;
      // semconv: error.type is the status code's name when the span is an error
      if (SERVER_ERROR_CODES.has(ev.status_code)) attributes[ATTR_ERROR_TYPE] = GRPC_CODES[ev.status_code] ?? String(ev.status_code);
    }
    if (ev.flags & GrpcServerEventFlags.GT_GRPC_SERVER_EVENT_CONN) Object.assign(attributes, serverConnAttributes(ev.conn));
    if (ev.method_len > ev.method.length) attributes['gotrail.rpc.method.truncated'] = true;
    emitProbeSpan(ctx, {
      traceState: incomingTraceState(ev.tracestate, ev.tracestate_len),
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
