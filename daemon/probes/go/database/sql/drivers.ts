/**
 * Which database a database/sql call talks to, and which type its error
 * has, told from code addresses the probe read in the process (the first
 * method of an itab): the function at that address, found in the binary's
 * function table (pclntab or symbols, so stripped binaries too), names the
 * driver's package or the error's type.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import {
  DB_SYSTEM_NAME_VALUE_MARIADB, DB_SYSTEM_NAME_VALUE_MICROSOFT_SQL_SERVER, DB_SYSTEM_NAME_VALUE_MYSQL,
  DB_SYSTEM_NAME_VALUE_POSTGRESQL,
} from '@opentelemetry/semantic-conventions';
import { DB_SYSTEM_NAME_VALUE_OTHER_SQL, DB_SYSTEM_NAME_VALUE_SQLITE } from '@opentelemetry/semantic-conventions/incubating';
import { openGoBinary } from '../../../../analysis/go-binary.ts';

/** Driver packages by import-path prefix → db.system.name. */
const DRIVERS: ReadonlyArray<[string, string]> = [
  ['github.com/jackc/pgx/', DB_SYSTEM_NAME_VALUE_POSTGRESQL],
  ['github.com/lib/pq.', DB_SYSTEM_NAME_VALUE_POSTGRESQL],
  ['github.com/lib/pq/', DB_SYSTEM_NAME_VALUE_POSTGRESQL],
  ['modernc.org/sqlite.', DB_SYSTEM_NAME_VALUE_SQLITE],
  ['modernc.org/sqlite/', DB_SYSTEM_NAME_VALUE_SQLITE],
  ['github.com/mattn/go-sqlite3.', DB_SYSTEM_NAME_VALUE_SQLITE],
  ['github.com/glebarez/go-sqlite.', DB_SYSTEM_NAME_VALUE_SQLITE],
  ['github.com/ncruces/go-sqlite3/', DB_SYSTEM_NAME_VALUE_SQLITE],
  ['github.com/go-sql-driver/mysql.', DB_SYSTEM_NAME_VALUE_MYSQL],
  ['github.com/microsoft/go-mssqldb', DB_SYSTEM_NAME_VALUE_MICROSOFT_SQL_SERVER],
  ['github.com/denisenkom/go-mssqldb', DB_SYSTEM_NAME_VALUE_MICROSOFT_SQL_SERVER],
];
void DB_SYSTEM_NAME_VALUE_MARIADB;

/** The connector sql.Open makes for a driver without OpenConnector: its driver field names the driver. */
export function isDsnConnector(fn: string): boolean {
  return fn.startsWith('database/sql.dsnConnector.') || fn.startsWith('database/sql.(*dsnConnector).');
}

/** db.system.name of the package of function `fn` (`github.com/lib/pq.(*Connector).Connect`), other_sql when unknown. */
export function systemOfFunction(fn: string | undefined): string {
  if (fn !== undefined) for (const [prefix, system] of DRIVERS) if (fn.startsWith(prefix)) return system;
  return DB_SYSTEM_NAME_VALUE_OTHER_SQL;
}

/**
 * The type whose method `fn` is, as Go's `%T` prints it with the full import
 * path: `github.com/jackc/pgx/v5/pgconn.(*PgError).Error` →
 * `*github.com/jackc/pgx/v5/pgconn.PgError`; undefined when `fn` is not a method.
 */
export function receiverType(fn: string): string | undefined {
  const paren = fn.indexOf('(');
  const slash = paren < 0 ? fn.lastIndexOf('/') : fn.lastIndexOf('/', paren);
  const tail = fn.slice(slash + 1);
  const m = /^([^.]+)\.(?:\((\*?)([^)]+)\)|([^.(]+))\.[^.]+$/.exec(tail);
  if (!m) return undefined;
  const pkg = fn.slice(0, slash + 1) + m[1]!;
  return m[3] !== undefined ? `${m[2]}${pkg}.${m[3]}` : `${pkg}.${m[4]}`;
}

const CACHE_MAX = 4096;

/**
 * Function names at code addresses of live processes, cached per process
 * and address (a process runs few drivers and error types). A miss opens
 * the process's executable (through /proc, so it is the file the process
 * runs) and walks its function table once; a PIE's load address comes from
 * /proc/PID/maps. Never throws: an address it cannot place (an exited
 * process, an unreadable file) gives undefined.
 */
export class CodeNames {
  readonly #names = new Map<string, string | undefined>();

  nameAt(pid: number, pc: bigint): string | undefined {
    if (pc === 0n) return undefined;
    const key = `${pid}:${pc}`;
    if (this.#names.has(key)) return this.#names.get(key);
    let name: string | undefined;
    try {
      name = lookup(pid, Number(pc));
    } catch {
      name = undefined;
    }
    if (this.#names.size >= CACHE_MAX) this.#names.clear();
    this.#names.set(key, name);
    return name;
  }
}

function lookup(pid: number, pc: number): string | undefined {
  const bin = openGoBinary(`/proc/${pid}/exe`);
  try {
    let addr = pc;
    if (bin.pie) {
      const exe = readlinkSync(`/proc/${pid}/exe`);
      const first = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
        .map((l) => l.split(/\s+/))
        .find((f) => f[5] === exe && f[2] !== undefined && Number.parseInt(f[2], 16) === 0);
      if (!first) return undefined;
      addr = pc - Number.parseInt(first[0]!.split('-')[0]!, 16);
    }
    for (const f of bin.functions()) if (addr >= f.entry && addr < f.end) return f.name;
    return undefined;
  } finally {
    bin.close();
  }
}
