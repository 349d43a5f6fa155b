/**
 * database/sql: one CLIENT span per query or exec a program runs through the
 * standard interface — DB calls (DB.query and DB.exec, which take the
 * connection from the pool: a call that cannot connect has its span too),
 * Conn and Tx calls (QueryRow variants included) and prepared statements
 * (Stmt.QueryContext, Stmt.ExecContext) — whatever the driver, following the
 * OpenTelemetry database conventions. A call made on a goroutine that is
 * serving a traced request is that request's child (the link is made in BPF).
 *
 * The query's text reaches the agent (bounded at GT_SQL_QUERY_MAX bytes);
 * spans carry only what cannot hold a value of the query (operation, table,
 * driver), and `db.query.text` sanitised (every literal `?`) only when the
 * user turns it on (`EventContext.dbQueryText`, `--db-query-text`).
 */
import {
  ATTR_DB_COLLECTION_NAME, ATTR_DB_NAMESPACE, ATTR_DB_OPERATION_NAME, ATTR_DB_QUERY_TEXT, ATTR_DB_SYSTEM_NAME, ATTR_ERROR_TYPE,
  ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, DB_SYSTEM_NAME_VALUE_MYSQL, DB_SYSTEM_NAME_VALUE_POSTGRESQL, ERROR_TYPE_VALUE_OTHER,
} from '@opentelemetry/semantic-conventions';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import {
  PairedFunction,
  BpfMaps, BpfPrograms, EventType, SqlEventFlags, SqlFlags, SQL_EVENT_SIZE, decodeSqlEvent, encodeSqlConfig, type SqlEvent,
} from '../../../../generated/layouts.ts';
import { emitProbeSpan, type EventContext, type EventProbe, fieldResolved } from '../../../types.ts';
import { CodeNames, isDsnConnector, receiverType, systemOfFunction } from './drivers.ts';
import { sanitizeSql, summarizeSql } from './query.ts';
import { parsePostgresDsn, withGoString, type DbServer } from './dsn.ts';

const SQL = 'database/sql';
const PGX = 'github.com/jackc/pgx/v5';

const F = {
  connector: `${SQL}.DB.connector`,
  stmtDb: `${SQL}.Stmt.db`,
  stmtQuery: `${SQL}.Stmt.query`,
  dsnDriver: `${SQL}.dsnConnector.driver`,
  connDb: `${SQL}.Conn.db`,
  txDb: `${SQL}.Tx.db`,
  sqlDsn: `${SQL}.dsnConnector.dsn`,
  pgxDsn: `${PGX}/stdlib.driverConnector.name`,
} as const;

const NO_SYSTEM = 'db.system.name is other_sql';
const NO_STMT = 'prepared statements (Stmt.QueryContext, Stmt.ExecContext) make no span';
const NO_SERVER = 'db.namespace, server.address and server.port are left out';

/** The code of pgx stdlib's connector, which keeps the DSN (`name`). */
const PGX_CONNECTOR = `${PGX}/stdlib.(*driverConnector).`;

const codeNames = new CodeNames();

/** The servers of the DBs of each traced process (dropped with the process's resource), by `db:connector`. */
const servers = new WeakMap<Resource, Map<string, DbServer>>();
const SERVERS_PER_PROCESS = 256;

/**
 * The server of the DB `db` (connector `connector`, of code `connectorName`)
 * in process `pid`: its DSN read and parsed the first time the DB is seen,
 * then remembered for the process's life. Only PostgreSQL DSNs kept by
 * sql.Open's connector (lib/pq) or pgx stdlib's are read; other drivers and
 * connectors (sql.OpenDB with a driver's own connector) give {}.
 */
function serverOf(ctx: EventContext, resource: Resource, pid: number, ev: SqlEvent, system: string, connectorName: string | undefined): DbServer {
  if (ev.db === 0n || ev.connector === 0n || system !== DB_SYSTEM_NAME_VALUE_POSTGRESQL || connectorName === undefined) return {};
  let known = servers.get(resource);
  if (!known) servers.set(resource, (known = new Map<string, DbServer>()));
  const key = `${ev.db}:${ev.connector}`;
  const seen = known.get(key);
  if (seen) return seen;
  const off = isDsnConnector(connectorName) ? ev.sql_dsn : connectorName.startsWith(PGX_CONNECTOR) ? ev.pgx_dsn : -1;
  let server: DbServer = {};
  if (off >= 0) {
    const got = withGoString(pid, ev.connector + BigInt(off), parsePostgresDsn);
    if (typeof got === 'string') ctx.problem(`database/sql: the DSN of a DB could not be read (${got}): ${NO_SERVER}`);
    else server = got;
  }
  if (known.size >= SERVERS_PER_PROCESS) known.clear();
  known.set(key, server);
  return server;
}

/** db.system.name of a call: from the connector's code, or the driver's behind sql.Open's connector. */
function systemOf(pid: number, connector: string | undefined, driverFn: bigint): string {
  if (connector !== undefined && isDsnConnector(connector)) return systemOfFunction(codeNames.nameAt(pid, driverFn));
  return systemOfFunction(connector);
}

/** The span's name per the conventions: `{operation} {table}`, `{operation}`, else the system. */
export function sqlSpanName(system: string, operation: string | undefined, collection: string | undefined): string {
  if (operation === undefined) return system;
  return collection === undefined ? operation : `${operation} ${collection}`;
}

export const sqlProbe: EventProbe = {
  id: 'database/sql',
  module: 'std',
  goPackage: SQL,
  description: 'SQL queries and execs through database/sql (CLIENT spans; db.namespace and server.* for PostgreSQL through pgx stdlib or lib/pq opened with sql.Open)',
  functions: [
    { symbol: `${SQL}.(*DB).query`, entryProgram: BpfPrograms.gt_sql_query_entry, returnProgram: BpfPrograms.gt_sql_query_return, absentMeans: 'this program never queries through database/sql' },
    { symbol: `${SQL}.(*DB).exec`, entryProgram: BpfPrograms.gt_sql_exec_entry, returnProgram: BpfPrograms.gt_sql_exec_return, optional: 'execs (DB.ExecContext) make no span', absentMeans: 'this program never runs execs through database/sql' },
    { symbol: `${SQL}.(*Conn).QueryContext`, entryProgram: BpfPrograms.gt_sql_conn_query_entry, returnProgram: BpfPrograms.gt_sql_query_return, optional: 'queries on a dedicated connection (Conn) make no span', absentMeans: 'this program never queries through a Conn' },
    { symbol: `${SQL}.(*Conn).ExecContext`, entryProgram: BpfPrograms.gt_sql_conn_exec_entry, returnProgram: BpfPrograms.gt_sql_exec_return, optional: 'execs on a dedicated connection (Conn) make no span', absentMeans: 'this program never runs execs through a Conn' },
    { symbol: `${SQL}.(*Tx).QueryContext`, entryProgram: BpfPrograms.gt_sql_tx_query_entry, returnProgram: BpfPrograms.gt_sql_query_return, optional: 'queries in transactions make no span', absentMeans: 'this program never queries in a transaction' },
    { symbol: `${SQL}.(*Tx).ExecContext`, entryProgram: BpfPrograms.gt_sql_tx_exec_entry, returnProgram: BpfPrograms.gt_sql_exec_return, optional: 'execs in transactions make no span', absentMeans: 'this program never runs execs in a transaction' },
    { symbol: `${SQL}.(*Stmt).QueryContext`, entryProgram: BpfPrograms.gt_sql_stmt_query_entry, returnProgram: BpfPrograms.gt_sql_query_return, optional: 'queries of prepared statements make no span', absentMeans: 'this program never queries through prepared statements' },
    { symbol: `${SQL}.(*Stmt).ExecContext`, entryProgram: BpfPrograms.gt_sql_stmt_exec_entry, returnProgram: BpfPrograms.gt_sql_exec_return, optional: 'execs of prepared statements make no span', absentMeans: 'this program never runs execs through prepared statements' },
  ],
  fields: {
    [F.connector]: { reads: 'the connector, whose code names the driver (db.system.name)', optional: NO_SYSTEM },
    [F.dsnDriver]: { reads: 'the driver behind the connector sql.Open makes, for db.system.name', optional: `${NO_SYSTEM} for drivers opened without a connector of their own` },
    [F.stmtDb]: { reads: 'the statement\'s DB, for db.system.name', optional: NO_STMT },
    [F.stmtQuery]: { reads: 'the statement\'s query text', optional: NO_STMT },
    [F.connDb]: { reads: 'the Conn\'s DB, for db.system.name', optional: `${NO_SYSTEM} for calls through a Conn` },
    [F.txDb]: { reads: 'the transaction\'s DB, for db.system.name', optional: `${NO_SYSTEM} for calls in a transaction` },
    [F.sqlDsn]: { reads: 'the DSN sql.Open keeps (lib/pq), for db.namespace and server.address', optional: `${NO_SERVER} for drivers opened through sql.Open's connector` },
    [F.pgxDsn]: { reads: 'the DSN pgx stdlib keeps, for db.namespace and server.address', optional: `${NO_SERVER} for pgx`, module: PGX },
  },
  configMap: BpfMaps.gt_sql_config,
  stateMaps: [BpfMaps.gt_sql_inflight],
  inflightMaps: [{ map: BpfMaps.gt_sql_inflight, paired: [PairedFunction.GT_PAIRED_SQL] }],
  encodeConfig(o, missingOptional) {
    const has = fieldResolved(o, missingOptional);
    return encodeSqlConfig({
      db_connector: o[F.connector] ?? 0,
      stmt_db: o[F.stmtDb] ?? 0,
      stmt_query: o[F.stmtQuery] ?? 0,
      dsn_driver: o[F.dsnDriver] ?? 0,
      conn_db: o[F.connDb] ?? 0,
      tx_db: o[F.txDb] ?? 0,
      sql_dsn: has(F.sqlDsn) ? o[F.sqlDsn]! : -1,
      pgx_dsn: has(F.pgxDsn) ? o[F.pgxDsn]! : -1,
      flags: SqlFlags.GT_SQL_ENABLED
        | (has(F.stmtDb) && has(F.stmtQuery) ? SqlFlags.GT_SQL_STMT : 0)
        | (has(F.connector) ? SqlFlags.GT_SQL_DRIVER : 0)
        | (has(F.dsnDriver) ? SqlFlags.GT_SQL_DSN_DRIVER : 0)
        | (has(F.connDb) ? SqlFlags.GT_SQL_CONN_DB : 0)
        | (has(F.txDb) ? SqlFlags.GT_SQL_TX_DB : 0),
    });
  },
  eventType: EventType.GT_EVENT_SQL,
  eventSize: SQL_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeSqlEvent(buf, off);
    const resource = ctx.resourceOf(ev.hdr.tgid);
    if (!resource) {
      ctx.problem('database/sql event from an unknown process');
      return;
    }
    const captured = ev.query_len < 0 ? '' : ev.query.subarray(0, Math.min(ev.query_len, ev.query.length)).toString('utf8');
    const connectorName = codeNames.nameAt(ev.hdr.tgid, ev.connector_fn);
    const system = systemOf(ev.hdr.tgid, connectorName, ev.driver_fn);
    const server = serverOf(ctx, resource, ev.hdr.tgid, ev, system, connectorName);
    const dialect = system === DB_SYSTEM_NAME_VALUE_MYSQL ? 'mysql' : 'standard';
    // a query cut short names its operation, but its table may be cut off
    const truncated = ev.query_len > ev.query.length;
    const { operation, collection } = summarizeSql(captured, dialect);
    const attributes: Attributes = { [ATTR_DB_SYSTEM_NAME]: system };
    if (server.namespace !== undefined) attributes[ATTR_DB_NAMESPACE] = server.namespace;
    if (server.address !== undefined) attributes[ATTR_SERVER_ADDRESS] = server.address;
    if (server.port !== undefined) attributes[ATTR_SERVER_PORT] = server.port;
    if (operation !== undefined) attributes[ATTR_DB_OPERATION_NAME] = operation;
    if (collection !== undefined && !truncated) attributes[ATTR_DB_COLLECTION_NAME] = collection;
    if (ctx.dbQueryText === true && captured) attributes[ATTR_DB_QUERY_TEXT] = sanitizeSql(captured, dialect);
    if (truncated) attributes['gotrail.db.query.truncated'] = true;
    const failed = (ev.flags & SqlEventFlags.GT_SQL_EVENT_ERROR) !== 0;
    if (failed) {
      const fn = codeNames.nameAt(ev.hdr.tgid, ev.error_fn);
      attributes[ATTR_ERROR_TYPE] = (fn !== undefined ? receiverType(fn) : undefined) ?? ERROR_TYPE_VALUE_OTHER;
    }
    emitProbeSpan(ctx, {
      name: sqlSpanName(system, operation, truncated ? undefined : collection),
      kind: SpanKind.CLIENT,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      error: failed,
      resource,
      scope: SQL,
    });
  },
};
