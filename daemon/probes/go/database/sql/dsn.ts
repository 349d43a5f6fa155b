/**
 * Which PostgreSQL server and database a `*sql.DB` talks to, from its DSN —
 * the string the program gave `sql.Open`, which sql.Open's connector (lib/pq)
 * and pgx stdlib's connector keep — read once per DB from the process's
 * memory (`/proc/PID/mem`, the access the agent already has for code repair).
 *
 * A DSN carries the user and the password: it is parsed as bytes, only the
 * host, port and database name are decoded to strings, and the buffer is
 * zeroed before this module returns. Nothing else of it is kept, logged or
 * exported.
 */
import { closeSync, openSync, readSync } from 'node:fs';

/** What a DSN tells of the server, per the OpenTelemetry database conventions. */
export interface DbServer {
  /** db.namespace: the database name */
  namespace?: string;
  /** server.address: a host name or IP address, or for a Unix socket its path (`/run/postgresql/.s.PGSQL.5432`) */
  address?: string;
  /** server.port: a TCP port, only beside a network `address` */
  port?: number;
}

/** The longest DSN read; a longer one gives no attributes. */
export const DSN_MAX = 2048;

const PG_DEFAULT_PORT = 5432;

/**
 * The server of a PostgreSQL DSN in URL form (`postgres://u:p@host:5432/db?…`,
 * `postgresql://…`, query parameters `host`, `port`, `dbname`, `search_path`
 * overriding or adding) or keyword form (`host=… port=… dbname=…`, values
 * quoted with `'` and escaped with `\` as libpq has them), per the
 * conventions' PostgreSQL page:
 *
 * - db.namespace: the database name, `{database}|{schema}` when the DSN sets
 *   `search_path` (its first schema; not `$user`, which would need the user's
 *   name); absent without a database name (the driver then takes the user's
 *   name or PGDATABASE);
 * - server.address: the host as configured, the first one of a list (the
 *   conventions want the configured address, not the one a connection
 *   reached); a host starting with `/` is a Unix socket's directory and gives
 *   the socket's path, `DIR/.s.PGSQL.PORT`; absent without a host (the
 *   driver's default: a local socket or localhost, or PGHOST);
 * - server.port: beside a network address, when the DSN gives one port for
 *   every host (absent otherwise: 5432, PGPORT, or several ports).
 *
 * Gives {} for anything else (a DSN of another form, pgx's
 * `registeredConnConfigN`). Never throws; does not keep `dsn`.
 */
export function parsePostgresDsn(dsn: Uint8Array): DbServer {
  try {
    const kv = startsWithScheme(dsn) ? urlSettings(dsn) : keywordSettings(dsn);
    return kv ? serverOf(kv) : {};
  } catch {
    return {};
  }
}

type Settings = Partial<Record<'host' | 'port' | 'dbname' | 'search_path', string>>;

const KEPT = new Set(['host', 'port', 'dbname', 'search_path']);

function validPort(p: string): number | undefined {
  if (!/^\d{1,5}$/.test(p)) return undefined;
  const n = Number(p);
  return n >= 1 && n <= 65535 ? n : undefined;
}

function serverOf(s: Settings): DbServer {
  const out: DbServer = {};
  const schema = s.search_path?.split(',')[0]?.trim().replace(/^"(.*)"$/, '$1');
  if (s.dbname) out.namespace = schema && schema !== '$user' ? `${s.dbname}|${schema}` : s.dbname;
  const hosts = (s.host ?? '').split(',');
  const host = hosts[0]!;
  if (host === '') return out;
  // one port for every host: the port (libpq's rule: a single port applies to all hosts)
  const ports = (s.port ?? '').split(',').map((p) => p.trim());
  const allPorts = ports.length === 1 ? ports[0]! : ports.every((p) => p === ports[0]) && ports.length === hosts.length ? ports[0]! : undefined;
  const port = allPorts ? validPort(allPorts) : undefined;
  if (host.startsWith('/')) {
    const own = ports[0] ? validPort(ports[0]) : PG_DEFAULT_PORT;
    if (own !== undefined) out.address = `${host.replace(/\/+$/, '')}/.s.PGSQL.${own}`;
  } else {
    out.address = host;
    if (port !== undefined) out.port = port;
  }
  return out;
}

const lower = (b: number): number => (b >= 0x41 && b <= 0x5a ? b + 0x20 : b);

function startsWithScheme(d: Uint8Array): boolean {
  for (const scheme of ['postgres://', 'postgresql://']) {
    if (d.length >= scheme.length && [...scheme].every((c, i) => lower(d[i]!) === c.charCodeAt(0))) return true;
  }
  return false;
}

function indexOfAny(d: Uint8Array, from: number, to: number, chars: string): number {
  for (let i = from; i < to; i++) if (chars.includes(String.fromCharCode(d[i]!))) return i;
  return to;
}

function hexVal(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  const l = lower(b);
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/** d[from, to) percent-decoded (and `+` as a space in a query), as UTF-8. */
function percentDecode(d: Uint8Array, from: number, to: number, plusSpace: boolean): string {
  const out: number[] = [];
  for (let i = from; i < to; i++) {
    const b = d[i]!;
    if (b === 0x25 && i + 2 < to && hexVal(d[i + 1]!) >= 0 && hexVal(d[i + 2]!) >= 0) {
      out.push(hexVal(d[i + 1]!) * 16 + hexVal(d[i + 2]!));
      i += 2;
    } else out.push(plusSpace && b === 0x2b ? 0x20 : b);
  }
  return Buffer.from(out).toString('utf8');
}

function urlSettings(d: Uint8Array): Settings | undefined {
  const s: Settings = {};
  let i = d.indexOf(0x3a) + 3; // past "://"
  const end = d.length;
  const authEnd = indexOfAny(d, i, end, '/?#');
  // the user information ends at the authority's last '@': skipped, never decoded
  let hostStart = i;
  for (let j = i; j < authEnd; j++) if (d[j] === 0x40) hostStart = j + 1;
  const authority = percentDecode(d, hostStart, authEnd, false);
  if (authority !== '') {
    const hosts: string[] = [];
    const ports: string[] = [];
    for (const h of authority.split(',')) {
      const m = /^\[([^\]]*)\](?::(.*))?$/.exec(h) ?? /^([^:]*)(?::(.*))?$/.exec(h);
      if (!m) return undefined;
      hosts.push(m[1] ?? '');
      ports.push(m[2] ?? '');
    }
    if (hosts.some((h) => h !== '')) s.host = hosts.join(',');
    if (ports.some((p) => p !== '')) s.port = ports.join(',');
  }
  i = authEnd;
  if (d[i] === 0x2f) {
    const pathEnd = indexOfAny(d, i, end, '?#');
    const db = percentDecode(d, i + 1, pathEnd, false);
    if (db !== '') s.dbname = db;
    i = pathEnd;
  }
  if (d[i] === 0x3f) {
    const qEnd = indexOfAny(d, i, end, '#');
    let p = i + 1;
    while (p < qEnd) {
      const pEnd = indexOfAny(d, p, qEnd, '&');
      const eq = indexOfAny(d, p, pEnd, '=');
      const key = percentDecode(d, p, eq, true);
      if (KEPT.has(key) && eq < pEnd) s[key as keyof Settings] = percentDecode(d, eq + 1, pEnd, true);
      p = pEnd + 1;
    }
  }
  return s;
}

const isSpace = (b: number | undefined): boolean => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0x0b || b === 0x0c;

function keywordSettings(d: Uint8Array): Settings | undefined {
  const s: Settings = {};
  let i = 0;
  const end = d.length;
  let pairs = 0;
  for (;;) {
    while (isSpace(d[i])) i++;
    if (i >= end) break;
    const keyStart = i;
    while (i < end && d[i] !== 0x3d && !isSpace(d[i])) i++;
    const keyEnd = i;
    while (isSpace(d[i])) i++;
    if (d[i] !== 0x3d || keyEnd === keyStart) return undefined; // not key=value: another form
    i++;
    while (isSpace(d[i])) i++;
    const key = Buffer.from(d.subarray(keyStart, keyEnd)).toString('latin1');
    const keep = KEPT.has(key);
    const value: number[] = [];
    if (d[i] === 0x27) {
      i++;
      for (;;) {
        if (i >= end) return undefined; // unterminated quote
        if (d[i] === 0x5c && i + 1 < end) i++;
        else if (d[i] === 0x27) break;
        if (keep) value.push(d[i]!);
        i++;
      }
      i++;
    } else {
      while (i < end && !isSpace(d[i])) {
        if (d[i] === 0x5c && i + 1 < end) i++;
        if (keep) value.push(d[i]!);
        i++;
      }
    }
    if (keep) s[key as keyof Settings] = Buffer.from(value).toString('utf8');
    value.fill(0);
    pairs++;
  }
  return pairs ? s : undefined;
}

/** Why a DSN could not be read: for the agent's problem counter. */
export type DsnReadFailure = 'unreadable' | 'too long';

/**
 * The Go string at `addr` (its header: data pointer, length) in process
 * `pid`, handed to `use` and zeroed after it returns; a failure when the
 * memory cannot be read or the string is longer than {@link DSN_MAX} bytes.
 */
export function withGoString<T>(pid: number, addr: bigint, use: (s: Uint8Array) => T): T | DsnReadFailure {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/mem`, 'r');
  } catch {
    return 'unreadable';
  }
  const header = Buffer.alloc(16);
  let data: Buffer | undefined;
  try {
    if (readSync(fd, header, 0, 16, addr) !== 16) return 'unreadable';
    const ptr = header.readBigUInt64LE(0);
    const len = header.readBigInt64LE(8);
    if (len < 0n) return 'unreadable';
    if (len > BigInt(DSN_MAX)) return 'too long';
    data = Buffer.alloc(Number(len));
    if (len > 0n && readSync(fd, data, 0, data.length, ptr) !== data.length) return 'unreadable';
    return use(data);
  } catch {
    return 'unreadable';
  } finally {
    data?.fill(0);
    header.fill(0);
    closeSync(fd);
  }
}
