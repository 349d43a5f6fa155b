/**
 * The struct fields whose offsets gotrail's probes read, per module: the one
 * list that offsets-db/generate.ts generates data for. A probe that needs a new
 * field adds it here (with the reason) and re-runs the generator.
 */

/** What the generator needs to know to produce offsets for one module. */
export interface ModuleFields {
  /** `std` for the standard library, else the module path. */
  module: string;
  /**
   * Module versions to build from the module proxy (third-party modules only;
   * the standard library is built once per available Go toolchain instead).
   * Without `v` prefix, like the data files. Default: none (reference data only).
   */
  versions?: string[];
  /** Import paths the probe program imports. */
  imports: string[];
  /**
   * Go statements that make the linker keep the code (and so the DWARF types)
   * of the structs below. They are compiled but never executed.
   */
  keep: string[];
  /** `pkg.Struct.field` → which probe reads it (documentation for reviewers). */
  fields: Record<string, string>;
}

const HTTP_SERVER = 'net/http server probe (probes/go/net/http/server)';
const GRPC_SERVER = 'gRPC server probe (google.golang.org/grpc.(*Server).handleStream)';
const GRPC_CLIENT = 'gRPC client probe (google.golang.org/grpc.(*ClientConn).Invoke)';
const GRPC = 'google.golang.org/grpc';
const HTTP_CLIENT = 'net/http client probe (probes/go/net/http/client)';
const H2_LINK = 'net/http client and server probes: the connection and stream id that link an HTTP/2 client span to its server span';
const CONN_LINK = 'net/http client and server probes: the TCP 4-tuple that links a client span to the server span of the same connection';

/** All modules and fields, in the order the data files list them. */
export const MODULE_FIELDS: readonly ModuleFields[] = [
  {
    module: 'std',
    imports: ['bufio', 'net', 'net/http', 'net/url'],
    keep: ['_ = http.ListenAndServe("", nil)', '_, _ = url.Parse("")', '_ = bufio.NewReader(nil)', '_, _ = http.Get("")', '_, _ = net.Dial("", "")', '_ = http.ListenAndServeTLS("", "", "", nil)'],
    fields: {
      'runtime.g.goid': 'every probe: in-flight state is keyed by {tgid, goid}',
      'net/http.Request.Method': `${HTTP_SERVER}, ${HTTP_CLIENT}`,
      'net/http.Request.URL': `${HTTP_SERVER}, ${HTTP_CLIENT}`,
      'net/http.Request.Host': HTTP_SERVER,
      'net/http.Request.RemoteAddr': HTTP_SERVER,
      'net/http.Request.RequestURI': HTTP_SERVER,
      'net/http.Request.Proto': HTTP_SERVER,
      'net/url.URL.Path': `${HTTP_SERVER}, ${HTTP_CLIENT}`,
      'net/url.URL.RawQuery': HTTP_SERVER,
      'net/url.URL.Scheme': HTTP_CLIENT,
      'net/url.URL.Host': HTTP_CLIENT,
      'net/http.Response.StatusCode': HTTP_CLIENT,
      'net/http.response.req': HTTP_SERVER,
      'net/http.response.status': HTTP_SERVER,
      'net/http.response.conn': HTTP_SERVER,
      'net/http.response.wroteHeader': HTTP_SERVER,
      'net/http.conn.bufr': `${HTTP_SERVER}: reads traceparent from the connection's read buffer`,
      'net/http.Request.TLS': `${HTTP_SERVER}: url.scheme (https when the request came over TLS)`,
      'net/http.Request.ProtoMajor': `${HTTP_SERVER}: network.protocol.version`,
      'net/http.Request.ProtoMinor': `${HTTP_SERVER}: network.protocol.version`,
      'net/http.conn.hijackedv': `${HTTP_SERVER}: a hijacked connection's status is not the ResponseWriter's`,
      'net/http.Request.Header': `${HTTP_SERVER}: the request's parsed header, searched for traceparent and tracestate`,
      'runtime.hmap.count': `${HTTP_SERVER}: walks the header map (Go before 1.24)`,
      'runtime.hmap.flags': `${HTTP_SERVER}: walks the header map (Go before 1.24)`,
      'runtime.hmap.B': `${HTTP_SERVER}: walks the header map (Go before 1.24)`,
      'runtime.hmap.buckets': `${HTTP_SERVER}: walks the header map (Go before 1.24)`,
      'runtime.hmap.oldbuckets': `${HTTP_SERVER}: walks the header map while it grows (Go before 1.24)`,
      'internal/runtime/maps.Map.used': `${HTTP_SERVER}: walks the header map (Go 1.24 and later, swiss tables)`,
      'internal/runtime/maps.Map.dirPtr': `${HTTP_SERVER}: walks the header map (Go 1.24 and later)`,
      'internal/runtime/maps.Map.dirLen': `${HTTP_SERVER}: walks the header map (Go 1.24 and later)`,
      'internal/runtime/maps.table.groups': `${HTTP_SERVER}: walks the header map (Go 1.24 and later)`,
      'internal/runtime/maps.groupsReference.data': `${HTTP_SERVER}: walks the header map (Go 1.24 and later)`,
      'internal/runtime/maps.groupsReference.lengthMask': `${HTTP_SERVER}: walks the header map (Go 1.24 and later)`,
      'net/http.conn.rwc': `${HTTP_SERVER}: the net.Conn, for the 4-tuple`,
      'net/http.http2responseWriter.rws': `${HTTP_SERVER}: the status of an HTTP/2 response (Go before 1.27, bundled HTTP/2)`,
      'net/http.http2responseWriterState.status': `${HTTP_SERVER}: the status of an HTTP/2 response (Go before 1.27)`,
      'net/http/internal/http2.responseWriter.rws': `${HTTP_SERVER}: the status of an HTTP/2 response (Go 1.27 and later)`,
      'net/http/internal/http2.responseWriterState.status': `${HTTP_SERVER}: the status of an HTTP/2 response (Go 1.27 and later)`,
      'net/http.conn.server': `${HTTP_SERVER}: tells an HTTP/1 response (whose conn names the handler's server) from an HTTP/2 one`,
      'net/http.conn.remoteAddr': HTTP_SERVER,
      'bufio.Reader.buf': `${HTTP_SERVER}: request bytes buffered for the connection`,
      'bufio.Reader.r': HTTP_SERVER,
      'bufio.Reader.w': HTTP_SERVER,
      'net/http.persistConn.conn': `${HTTP_CLIENT}: the connection a request is sent on`,
      'net.conn.fd': CONN_LINK,
      'net.netFD.laddr': CONN_LINK,
      'net.netFD.raddr': CONN_LINK,
      'net.TCPAddr.IP': CONN_LINK,
      'net.TCPAddr.Port': CONN_LINK,
      'crypto/tls.Conn.conn': `${H2_LINK}: the TCP connection under a TLS one`,
      'net/http.http2clientStream.cc': `${H2_LINK}, client: the stream's connection (Go before 1.27, bundled HTTP/2)`,
      'net/http.http2clientStream.ID': `${H2_LINK}, client: the stream id (Go before 1.27)`,
      'net/http.http2ClientConn.tconn': `${H2_LINK}, client: the connection's net.Conn (Go before 1.27)`,
      'net/http.http2ClientConn.tlsState': `${H2_LINK}, client: whether tconn is a TLS connection (Go before 1.27)`,
      'net/http/internal/http2.clientStream.cc': `${H2_LINK}, client: the stream's connection (Go 1.27 and later)`,
      'net/http/internal/http2.clientStream.ID': `${H2_LINK}, client: the stream id (Go 1.27 and later)`,
      'net/http/internal/http2.ClientConn.tconn': `${H2_LINK}, client: the connection's net.Conn (Go 1.27 and later)`,
      'net/http/internal/http2.ClientConn.tlsState': `${H2_LINK}, client: whether tconn is a TLS connection (Go 1.27 and later)`,
      'net/http/internal/http2.ClientRequest.URL': `${H2_LINK}, client: the request's URL, shared with the http.Request (Go 1.27 and later)`,
      'net/http.http2responseWriterState.stream': `${H2_LINK}, server: the request's stream (Go before 1.27)`,
      'net/http.http2stream.id': `${H2_LINK}, server: the stream id (Go before 1.27)`,
      'net/http.http2responseWriterState.conn': `${H2_LINK}, server: the stream's connection (Go before 1.27)`,
      'net/http.http2serverConn.conn': `${H2_LINK}, server: the connection's net.Conn (Go before 1.27)`,
      'net/http.http2serverConn.tlsState': `${H2_LINK}, server: whether conn is a TLS connection (Go before 1.27)`,
      'net/http/internal/http2.responseWriterState.stream': `${H2_LINK}, server: the request's stream (Go 1.27 and later)`,
      'net/http/internal/http2.stream.id': `${H2_LINK}, server: the stream id (Go 1.27 and later)`,
      'net/http/internal/http2.responseWriterState.conn': `${H2_LINK}, server: the stream's connection (Go 1.27 and later)`,
      'net/http/internal/http2.serverConn.conn': `${H2_LINK}, server: the connection's net.Conn (Go 1.27 and later)`,
      'net/http/internal/http2.serverConn.tlsState': `${H2_LINK}, server: whether conn is a TLS connection (Go 1.27 and later)`,
    },
  },
  {
    module: GRPC,
    // Spread over the versions the module proxy serves that the toolchains here build (v1.20.0
    // and later), cross-checked with the reference; then every version from v1.82.0 on, where
    // headerFrame gave way to clientHeaders in a patch release (v1.82.1) and the reference lacks
    // one or the other, including the -dev tags cut from the main branch, which kept headerFrame
    // until v1.85.0-dev; v1.83.2 and later are newer than the reference snapshot. v1.86.0-dev was
    // the newest version on the module proxy: with it the newest three minor lines are known for
    // every field, which is what carrying offsets forward to newer versions needs.
    versions: [
      '1.20.0', '1.40.0', '1.50.1', '1.60.1', '1.70.0',
      '1.82.0', '1.82.1', '1.83.0-dev', '1.83.0', '1.83.1', '1.83.2', '1.84.0-dev', '1.84.0', '1.85.0-dev', '1.85.0', '1.86.0-dev',
    ],
    imports: ['context', GRPC, `${GRPC}/peer`, `${GRPC}/status`],
    keep: [
      '_ = grpc.NewServer().Serve(nil)',
      'cc, _ := grpc.Dial("")',
      '_ = cc.Invoke(context.Background(), "", nil, nil)',
      '_, _ = peer.FromContext(context.Background())',
      '_ = status.Convert(nil)',
    ],
    fields: {
      [`${GRPC}.ClientConn.target`]: `${GRPC_CLIENT}: the dial target, for server.address`,
      [`${GRPC}/internal/transport.http2Client.nextID`]: `${GRPC_CLIENT}: id of the stream being opened, to find its headers`,
      [`${GRPC}/internal/transport.headerFrame.streamID`]: `${GRPC_CLIENT}: writes traceparent into the request headers (up to v1.82.0)`,
      [`${GRPC}/internal/transport.headerFrame.hf`]: `${GRPC_CLIENT}: the request header fields (up to v1.82.0)`,
      [`${GRPC}/internal/transport.clientHeaders.streamID`]: `${GRPC_CLIENT}: writes traceparent into the request headers (v1.82.1 and later)`,
      [`${GRPC}/internal/transport.clientHeaders.hf`]: `${GRPC_CLIENT}: the request header fields (v1.82.1 and later)`,
      [`${GRPC}/internal/status.Error.s`]: `${GRPC_CLIENT}: the status behind the error Invoke returns`,
      [`${GRPC}/internal/status.Status.s`]: 'gRPC client and server probes: the status proto, for rpc.grpc.status_code',
      [`${GRPC}/internal/transport.ServerStream.Stream`]: `${GRPC_SERVER}: the Stream of the ServerStream it is given (v1.69.0 and later)`,
      [`${GRPC}/internal/transport.Stream.method`]: `${GRPC_SERVER}: the full method name, for rpc.service and rpc.method`,
      [`${GRPC}/internal/transport.Stream.id`]: `${GRPC_SERVER}: the stream id, to find the request's headers`,
      [`${GRPC}/internal/transport.Stream.ctx`]: `${GRPC_SERVER}: the stream's context (incoming metadata)`,
      [`${GRPC}/internal/transport.http2Server.peer`]: `${GRPC_SERVER}: the connection's addresses (v1.60.0 and later)`,
      [`${GRPC}/peer.Peer.LocalAddr`]: `${GRPC_SERVER}: the server's address, for server.address and server.port (v1.60.0 and later)`,
    },
  },
];

/** The field list of one module, or `undefined` when no probe needs that module. */
export function fieldsOf(module: string): ModuleFields | undefined {
  return MODULE_FIELDS.find((m) => m.module === module);
}
