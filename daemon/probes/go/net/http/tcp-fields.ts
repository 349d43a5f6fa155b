/**
 * The fields that lead from a *net.TCPConn to its two addresses: shared by
 * the client and server probes, which meet on the connection's 4-tuple.
 */
import type { TcpOffsets } from '../../../../generated/layouts.ts';

export const TCP_FIELDS = ['net.conn.fd', 'net.netFD.laddr', 'net.netFD.raddr', 'net.TCPAddr.IP', 'net.TCPAddr.Port'];

/** What the probes read the TCP fields for. */
export const TCP_FIELDS_READ = 'the TCP 4-tuple that links a client span to the server span of the same connection';

export function tcpOffsets(o: Record<string, number>): TcpOffsets {
  return {
    conn_fd: o['net.conn.fd'] ?? 0,
    fd_laddr: o['net.netFD.laddr'] ?? 0,
    fd_raddr: o['net.netFD.raddr'] ?? 0,
    tcpaddr_ip: o['net.TCPAddr.IP'] ?? 0,
    tcpaddr_port: o['net.TCPAddr.Port'] ?? 0,
    reserved: 0,
  };
}
