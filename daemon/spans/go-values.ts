/** Values copied out of Go programs by the probes, made readable. */

/** A Go string copied by a probe: `len` is the Go length, the copy may be shorter. */
export function goString(bytes: Buffer, len: number): string {
  if (len <= 0) return '';
  return bytes.subarray(0, Math.min(len, bytes.length)).toString('utf8');
}

/** Splits "host:port" / "[v6]:port"; the port is undefined when absent or not numeric. */
export function splitHostPort(s: string): { host: string; port?: number } {
  const m = /^\[([^\]]*)\](?::(\d+))?$/.exec(s) ?? /^([^:]*)(?::(\d+))?$/.exec(s);
  if (!m) return { host: s };
  const port = m[2] !== undefined ? Number(m[2]) : undefined;
  return { host: m[1] ?? s, port: port !== undefined && port <= 65535 ? port : undefined };
}
