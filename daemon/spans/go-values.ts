/** Values copied out of Go programs by the probes, made readable. */

/** A Go string copied by a probe: `len` is the Go length, the copy may be shorter. */
export function goString(bytes: Buffer, len: number): string {
  if (len <= 0) return '';
  return bytes.subarray(0, Math.min(len, bytes.length)).toString('utf8');
}

/**
 * A Go string copied by a probe, read in place: `len` is the Go length, of
 * which at most `max` bytes (the field's size) were copied to `at`.
 */
export function stringAt(buf: Buffer, at: number, max: number, len: number): string {
  if (len <= 0) return '';
  return buf.toString('utf8', at, at + (len < max ? len : max));
}

/**
 * Splits "host:port" / "[v6]:port"; the port is undefined when absent or not
 * numeric. Without regular expressions: it runs twice for every HTTP span.
 */
export function splitHostPort(s: string): { host: string; port?: number } {
  if (s.charCodeAt(0) === 0x5b /* [ */) {
    const close = s.indexOf(']');
    if (close >= 0 && (close === s.length - 1 || (s.charCodeAt(close + 1) === 0x3a /* : */ && digitsFrom(s, close + 2)))) {
      const host = s.slice(1, close);
      if (host.indexOf(']') < 0) return close === s.length - 1 ? { host, port: undefined } : { host, port: port(s, close + 2) };
    }
  }
  const colon = s.indexOf(':');
  if (colon < 0) return { host: s, port: undefined };
  if (s.indexOf(':', colon + 1) >= 0 || !digitsFrom(s, colon + 1)) return { host: s };
  return { host: s.slice(0, colon), port: port(s, colon + 1) };
}

/** Whether s has one or more characters from `from` on, all decimal digits. */
function digitsFrom(s: string, from: number): boolean {
  if (from >= s.length) return false;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function port(s: string, from: number): number | undefined {
  const p = Number(s.slice(from));
  return p <= 65535 ? p : undefined;
}
