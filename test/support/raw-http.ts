/**
 * HTTP/1.x written byte for byte on one TCP connection: pipelined requests in
 * one write, header order and head sizes exactly as a test needs them, which
 * node:http does not offer.
 */
import { connect } from 'node:net';

/** One request head (and body), written as given: `HTTP/1.1` unless `proto` says otherwise. */
export interface RawRequest {
  method?: string;
  path: string;
  proto?: string;
  /** In this order; no Host header is added when one is given. */
  headers?: Array<[string, string]>;
  body?: string;
}

/** The request's bytes: request line, headers (Host first unless given), blank line, body. */
export function rawRequest(r: RawRequest): string {
  const headers = r.headers ?? [];
  const lines = [`${r.method ?? 'GET'} ${r.path} ${r.proto ?? 'HTTP/1.1'}`];
  if (!headers.some(([k]) => k.toLowerCase() === 'host')) lines.push('Host: 127.0.0.1');
  for (const [k, v] of headers) lines.push(`${k}: ${v}`);
  if (r.body !== undefined && !headers.some(([k]) => k.toLowerCase() === 'content-length')) lines.push(`Content-Length: ${Buffer.byteLength(r.body)}`);
  return lines.join('\r\n') + '\r\n\r\n' + (r.body ?? '');
}

/**
 * Writes `writes` one after the other on one connection to `url`'s host and
 * port (each string in one write; the next after the previous one's answers),
 * and resolves with the status codes of every response, once the server has
 * answered `expect` responses. The last request should say `Connection: close`.
 */
export function rawExchange(url: string, writes: string[], expect: number, timeoutMs = 10_000): Promise<number[]> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname);
    let text = '';
    let sent = 0;
    const statuses = (): number[] => [...text.matchAll(/^HTTP\/1\.[01] (\d{3}) /gm)].map((m) => Number(m[1]));
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no ${expect} responses in ${timeoutMs} ms: ${JSON.stringify(text.slice(0, 400))}`));
    }, timeoutMs);
    const writeNext = (): void => {
      if (sent < writes.length) sock.write(writes[sent++]!);
    };
    sock.on('connect', writeNext);
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const n = statuses().length;
      if (n >= expect) {
        clearTimeout(timer);
        sock.destroy();
        resolve(statuses());
        return;
      }
      // the next write goes out once everything written so far was answered
      if (sent < writes.length && n >= countRequests(writes.slice(0, sent))) writeNext();
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      const s = statuses();
      if (s.length >= expect) resolve(s);
      else reject(new Error(`connection closed after ${s.length} of ${expect} responses`));
    });
  });
}

function countRequests(writes: string[]): number {
  return writes.reduce((n, w) => n + [...w.matchAll(/^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/gm)].length, 0);
}
