/**
 * github.com/redis/go-redis/v9: one CLIENT span per command, and one per
 * pipeline or transaction (MULTI/EXEC), following the OpenTelemetry database
 * conventions for Redis. A call made on a goroutine that serves a traced
 * request is that request's child; a connection's set-up commands (HELLO,
 * SELECT, …) are children of the call that needed the connection.
 *
 * Nothing of a command's arguments is read: the probe reads the command's
 * name and the number of its arguments, so `db.query.text` (only with
 * `--db-query-text`) is the command with every argument replaced by `?`.
 */
import {
  ATTR_DB_NAMESPACE, ATTR_DB_OPERATION_BATCH_SIZE, ATTR_DB_OPERATION_NAME, ATTR_DB_QUERY_TEXT,
  ATTR_DB_RESPONSE_STATUS_CODE, ATTR_DB_SYSTEM_NAME, ATTR_ERROR_TYPE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT,
  ERROR_TYPE_VALUE_OTHER,
} from '@opentelemetry/semantic-conventions';
// the Redis value of db.system.name is incubating in this version of the conventions
import { DB_SYSTEM_NAME_VALUE_REDIS } from '../../../../../../spans/semconv.ts';
import { SpanKind, type Attributes } from '@opentelemetry/api';
import {
  BpfMaps, BpfPrograms, EventType, REDIS_EVENT_SIZE, RedisEventFlags, RedisFlags, RedisLimits,
  decodeRedisEvent, encodeRedisConfig, type RedisEvent,
} from '../../../../../../generated/layouts.ts';
import { emitProbeSpan, type EventContext, type EventProbe, fieldResolved } from '../../../../../types.ts';
import { goString, splitHostPort } from '../../../../../../spans/go-values.ts';

export const GO_REDIS = 'github.com/redis/go-redis/v9';

const F = {
  opt: `${GO_REDIS}.baseClient.opt`,
  addr: `${GO_REDIS}.Options.Addr`,
  db: `${GO_REDIS}.Options.DB`,
  args: `${GO_REDIS}.baseCmd.args`,
} as const;

/** The text of redis.Nil (proto.Nil): a key that does not exist, not an error. */
export const REDIS_NIL = 'redis: nil';

/** One command of an event: its name as the program gave it, and its argument count (name included; 255 means 255 or more). */
export interface RedisCommand {
  name: string;
  argc: number;
}

/** The commands an event names (at most RedisLimits.GT_REDIS_CMDS_MAX); a name the probe could not read is ''. */
export function eventCommands(ev: Pick<RedisEvent, 'argc' | 'name_len' | 'names' | 'cmd_count'>): RedisCommand[] {
  const n = Math.min(ev.cmd_count, RedisLimits.GT_REDIS_CMDS_MAX);
  const out: RedisCommand[] = [];
  for (let i = 0; i < n; i++) {
    const len = ev.name_len[i]!;
    const at = i * RedisLimits.GT_REDIS_NAME_MAX;
    const name = len > 0 ? goString(ev.names.subarray(at, at + RedisLimits.GT_REDIS_NAME_MAX), len) : '';
    out.push({ name, argc: ev.argc[i]! });
  }
  return out;
}

/** The sanitised text of a command: its name and one `?` per argument (`set ? ? ? ?`), since every argument is a value. */
export function sanitisedCommand(c: RedisCommand): string {
  const n = Math.max(0, c.argc - 1);
  return [c.name || '?', ...Array<string>(n).fill('?')].join(' ');
}

/**
 * The operation name of a call, per the conventions: the command as the
 * program gave it; for a pipeline `BATCH <command>` when every command is the
 * same, else `BATCH`; for a transaction `MULTI` (the commands between MULTI
 * and EXEC). Undefined when no name could be read.
 */
export function operationName(commands: RedisCommand[], count: number, pipeline: boolean, tx: boolean): string | undefined {
  if (!pipeline) return commands[0]?.name || undefined;
  if (tx) return 'MULTI';
  const names = new Set(commands.map((c) => c.name.toLowerCase()));
  if (commands.length === count && names.size === 1 && commands[0]!.name) return `BATCH ${commands[0]!.name}`;
  return 'BATCH';
}

/**
 * error.type of a failed call from the head of its error message: the
 * error prefix of a Redis error reply (`ERR`, `WRONGTYPE`, …: an upper-case
 * first word), else `_OTHER` (connection errors, timeouts, client errors).
 */
export function redisErrorPrefix(message: string): string | undefined {
  const m = /^([A-Z][A-Z0-9_]*)(?:\s|$)/.exec(message);
  return m ? m[1] : undefined;
}

export const goRedisProbe: EventProbe = {
  id: GO_REDIS,
  module: GO_REDIS,
  goPackage: GO_REDIS,
  description: 'go-redis v9 commands, pipelines and transactions (CLIENT spans)',
  functions: [
    {
      symbol: `${GO_REDIS}.(*baseClient).process`,
      // v9.18 and later: process is a one-line call of processStartingAt (same
      // receiver and arguments in the same registers), inlined where it is used
      alternativeSymbols: [`${GO_REDIS}.(*baseClient).processStartingAt`],
      entryProgram: BpfPrograms.gt_redis_process_entry, returnProgram: BpfPrograms.gt_redis_return,
      absentMeans: 'this program never sends Redis commands through a go-redis client',
    },
    {
      symbol: `${GO_REDIS}.(*baseClient).processPipeline`, entryProgram: BpfPrograms.gt_redis_pipeline_entry, returnProgram: BpfPrograms.gt_redis_return,
      optional: 'pipelines have no spans', absentMeans: 'this program never sends Redis pipelines',
    },
    {
      symbol: `${GO_REDIS}.(*baseClient).processTxPipeline`, entryProgram: BpfPrograms.gt_redis_tx_entry, returnProgram: BpfPrograms.gt_redis_return,
      optional: 'transactions (MULTI/EXEC) have no spans', absentMeans: 'this program never sends Redis transactions',
    },
  ],
  fields: {
    [F.args]: { reads: 'the command\'s arguments: the name (args[0]) and their number' },
    [F.opt]: { reads: 'the client\'s options', optional: 'server.address, server.port and db.namespace are not reported' },
    [F.addr]: { reads: 'the server\'s address, for server.address and server.port', optional: 'server.address and server.port are not reported' },
    [F.db]: { reads: 'the database index, for db.namespace', optional: 'db.namespace is not reported' },
  },
  configMap: BpfMaps.gt_redis_config,
  stateMaps: [BpfMaps.gt_redis_inflight, BpfMaps.gt_redis_depth],
  inflightMaps: [{ map: BpfMaps.gt_redis_inflight, paired: [] }, { map: BpfMaps.gt_redis_depth, paired: [] }],
  encodeConfig(o, missingOptional) {
    const has = fieldResolved(o, missingOptional);
    return encodeRedisConfig({
      client_opt: o[F.opt] ?? 0,
      opt_addr: o[F.addr] ?? 0,
      opt_db: o[F.db] ?? 0,
      cmd_args: o[F.args] ?? 0,
      flags: RedisFlags.GT_REDIS_ENABLED
        | (has(F.opt) && has(F.addr) ? RedisFlags.GT_REDIS_ADDR : 0)
        | (has(F.opt) && has(F.db) ? RedisFlags.GT_REDIS_DB : 0),
      reserved: 0,
    });
  },
  eventType: EventType.GT_EVENT_REDIS,
  eventSize: REDIS_EVENT_SIZE,
  handleEvent(buf: Buffer, off: number, ctx: EventContext): void {
    const ev = decodeRedisEvent(buf, off);
    const resource = ctx.resourceOf(ev.hdr.tgid);
    if (!resource) {
      ctx.problem('redis event from an unknown process');
      return;
    }
    const pipeline = (ev.flags & RedisEventFlags.GT_REDIS_EVENT_PIPELINE) !== 0;
    const tx = (ev.flags & RedisEventFlags.GT_REDIS_EVENT_TX) !== 0;
    const commands = eventCommands(ev);
    const op = operationName(commands, ev.cmd_count, pipeline, tx);
    const attributes: Attributes = { [ATTR_DB_SYSTEM_NAME]: DB_SYSTEM_NAME_VALUE_REDIS };
    if (op !== undefined) attributes[ATTR_DB_OPERATION_NAME] = op;
    else ctx.problem('redis event without a readable command name');
    // a transaction's commands are wrapped in MULTI … EXEC: the batch is what lies between
    if (pipeline) attributes[ATTR_DB_OPERATION_BATCH_SIZE] = tx ? Math.max(0, ev.cmd_count - 2) : ev.cmd_count;
    if (ev.flags & RedisEventFlags.GT_REDIS_EVENT_DB) attributes[ATTR_DB_NAMESPACE] = String(ev.db);
    const { host, port } = splitHostPort(goString(ev.addr, ev.addr_len));
    if (host) attributes[ATTR_SERVER_ADDRESS] = host;
    if (port !== undefined) attributes[ATTR_SERVER_PORT] = port;
    if (ctx.dbQueryText && commands.length > 0) {
      // only names and placeholders: no argument was ever read
      const text = commands.map(sanitisedCommand).join('\n');
      attributes[ATTR_DB_QUERY_TEXT] = commands.length < ev.cmd_count ? `${text}\n…` : text;
    }
    let error = false;
    if (ev.flags & RedisEventFlags.GT_REDIS_EVENT_ERROR) {
      const message = goString(ev.err, ev.err_len);
      if (message !== REDIS_NIL || ev.err_len !== REDIS_NIL.length) {
        error = true;
        const prefix = redisErrorPrefix(message);
        if (prefix !== undefined) attributes[ATTR_DB_RESPONSE_STATUS_CODE] = prefix;
        attributes[ATTR_ERROR_TYPE] = prefix ?? ERROR_TYPE_VALUE_OTHER;
      }
    }
    emitProbeSpan(ctx, {
      // {db.operation.name}: the database index is no useful target
      name: op ?? DB_SYSTEM_NAME_VALUE_REDIS,
      kind: SpanKind.CLIENT,
      span: ev.span,
      start_ns: ev.start_ns,
      end_ns: ev.end_ns,
      attributes,
      error,
      resource,
      scope: GO_REDIS,
    });
  },
};
