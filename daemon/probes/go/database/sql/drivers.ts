/**
 * Which database a database/sql call talks to, and which type its error
 * has, told from code addresses the probe read in the process (the first
 * method of an itab): the function at that address, found in the binary's
 * function table (pclntab or symbols, so stripped binaries too), names the
 * driver's package or the error's type.
 */
import { readFileSync, readlinkSync, statSync } from 'node:fs';
import {
  DB_SYSTEM_NAME_VALUE_MARIADB, DB_SYSTEM_NAME_VALUE_MICROSOFT_SQL_SERVER, DB_SYSTEM_NAME_VALUE_MYSQL,
  DB_SYSTEM_NAME_VALUE_POSTGRESQL,
} from '@opentelemetry/semantic-conventions';
import { DB_SYSTEM_NAME_VALUE_OTHER_SQL, DB_SYSTEM_NAME_VALUE_SQLITE } from '../../../../spans/semconv.ts';
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
const BINARIES_MAX = 64;

/**
 * The first method of the itabs the probe reads: driver.Connector's is
 * Connect, driver.Driver's Open, error's Error (an itab's methods are sorted
 * by name). Only functions of these names are kept from a binary's table.
 */
const ITAB_FIRST_METHOD = /\.(Connect|Open|Error)$/;

/** The kept functions of one binary, sorted by entry. */
interface MethodTable {
  /** relocated at load: addresses are offsets from the load address */
  pie: boolean;
  entries: Float64Array;
  ends: Float64Array;
  names: string[];
}

/**
 * Function names at code addresses of live processes. A binary's function
 * table is walked once (through /proc/PID/exe, so it is the file the process
 * runs, stripped or not: the pclntab names every function) and the methods
 * an itab can start with are kept, sorted; a PIE's load address comes from
 * /proc/PID/maps, once per process. Results are cached per process and
 * address. Never throws: an address it cannot place (an exited process, an
 * unreadable file) gives undefined.
 */
export class CodeNames {
  readonly #names = new Map<string, string | undefined>();
  /** dev:inode of an executable → its table */
  readonly #tables = new Map<string, MethodTable | undefined>();
  /** pid → dev:inode of its executable and its load bias */
  readonly #processes = new Map<number, { file: string; bias: number }>();

  nameAt(pid: number, pc: bigint): string | undefined {
    if (pc === 0n) return undefined;
    const key = `${pid}:${pc}`;
    if (this.#names.has(key)) return this.#names.get(key);
    let name: string | undefined;
    try {
      name = this.#lookup(pid, Number(pc));
    } catch {
      name = undefined;
    }
    if (this.#names.size >= CACHE_MAX) this.#names.clear();
    this.#names.set(key, name);
    return name;
  }

  #lookup(pid: number, pc: number): string | undefined {
    let proc = this.#processes.get(pid);
    if (!proc) {
      const st = statSync(`/proc/${pid}/exe`);
      const file = `${st.dev}:${st.ino}`;
      if (!this.#tables.has(file)) {
        if (this.#tables.size >= BINARIES_MAX) this.#tables.clear();
        this.#tables.set(file, readTable(pid));
      }
      proc = { file, bias: this.#tables.get(file)?.pie ? loadBias(pid) : 0 };
      if (this.#processes.size >= CACHE_MAX) this.#processes.clear();
      this.#processes.set(pid, proc);
    }
    const t = this.#tables.get(proc.file);
    if (!t) return undefined;
    const addr = pc - proc.bias;
    let lo = 0, hi = t.entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (t.entries[mid]! > addr) hi = mid - 1;
      else if (t.ends[mid]! <= addr) lo = mid + 1;
      else return t.names[mid];
    }
    return undefined;
  }
}

/** The itab-first methods of the process's executable, or undefined when it cannot be read. */
function readTable(pid: number): MethodTable | undefined {
  const bin = openGoBinary(`/proc/${pid}/exe`);
  try {
    const kept: Array<{ entry: number; end: number; name: string }> = [];
    for (const f of bin.functions()) if (ITAB_FIRST_METHOD.test(f.name)) kept.push(f);
    kept.sort((a, b) => a.entry - b.entry);
    return {
      pie: bin.pie,
      entries: Float64Array.from(kept, (f) => f.entry),
      ends: Float64Array.from(kept, (f) => f.end),
      names: kept.map((f) => f.name),
    };
  } finally {
    bin.close();
  }
}

/** Where a PIE process's executable was mapped: its mapping at file offset 0 (Go links PIEs at address 0). */
function loadBias(pid: number): number {
  const exe = readlinkSync(`/proc/${pid}/exe`);
  const first = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
    .map((l) => l.split(/\s+/))
    .find((f) => f[5] === exe && f[2] !== undefined && Number.parseInt(f[2], 16) === 0);
  return first ? Number.parseInt(first[0]!.split('-')[0]!, 16) : 0;
}
