/**
 * What the gRPC client and server probes share: the OpenTelemetry RPC
 * semantic conventions for gRPC (names, status codes, errors) and the
 * connection's ends as the probes carry them.
 */
import { ATTR_CLIENT_ADDRESS, ATTR_CLIENT_PORT, ATTR_NETWORK_PEER_ADDRESS, ATTR_NETWORK_PEER_PORT, ATTR_NETWORK_TRANSPORT, ATTR_NETWORK_TYPE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, NETWORK_TRANSPORT_VALUE_TCP, NETWORK_TYPE_VALUE_IPV4, NETWORK_TYPE_VALUE_IPV6 } from '@opentelemetry/semantic-conventions';
import type { Attributes } from '@opentelemetry/api';
import type { ConnKey } from '../../../../generated/layouts.ts';

/** The grpc module's struct fields, by their DWARF names. */
export const GRPC = 'google.golang.org/grpc';
export const TRANSPORT = `${GRPC}/internal/transport`;

/** google.golang.org/grpc/codes, by value. */
export const GRPC_CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS',
  'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE',
  'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
] as const;

/**
 * The codes that make a SERVER span an error (semconv, gRPC): Unknown,
 * DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss. The
 * others are the client's fault, not the server's.
 */
export const SERVER_ERROR_CODES: ReadonlySet<number> = new Set([2, 4, 12, 13, 14, 15]);

/**
 * `/pkg.Service/Method` split as the conventions want it: rpc.service
 * `pkg.Service`, rpc.method `Method`, span name `pkg.Service/Method`.
 * A name without the expected shape is kept whole as the span name.
 */
export function splitFullMethod(full: string): { name: string; service?: string; method?: string } {
  const name = full.startsWith('/') ? full.slice(1) : full;
  const slash = name.lastIndexOf('/');
  if (slash <= 0 || slash === name.length - 1) return { name: name || 'grpc' };
  return { name, service: name.slice(0, slash), method: name.slice(slash + 1) };
}

/** An IPv4-mapped or IPv6 address of 16 bytes, as text (IPv4 in dotted form). */
export function ipText(b: Buffer): string {
  const v4 = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (v4) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // the longest run of zero groups becomes "::"
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** server.*, client.* and network.* attributes of a connection seen by a server. */
export function serverConnAttributes(c: ConnKey): Attributes {
  const client = ipText(c.client_ip);
  const server = ipText(c.server_ip);
  return {
    [ATTR_SERVER_ADDRESS]: server,
    [ATTR_SERVER_PORT]: c.server_port,
    [ATTR_CLIENT_ADDRESS]: client,
    [ATTR_CLIENT_PORT]: c.client_port,
    [ATTR_NETWORK_PEER_ADDRESS]: client,
    [ATTR_NETWORK_PEER_PORT]: c.client_port,
    [ATTR_NETWORK_TRANSPORT]: NETWORK_TRANSPORT_VALUE_TCP,
    [ATTR_NETWORK_TYPE]: server.includes(':') ? NETWORK_TYPE_VALUE_IPV6 : NETWORK_TYPE_VALUE_IPV4,
  };
}
