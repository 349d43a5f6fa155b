/**
 * The agent's log: one line per record on stderr, leveled, with a helper that
 * logs a recurring problem once and counts the repeats (the hot path must
 * never flood the log).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export interface Logger {
  level: LogLevel;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Logs `msg` at warn the first time `key` is seen; later calls only count. */
  once(key: string, msg: string, fields?: Record<string, unknown>): void;
  /** How many times each `once` key was hit (first included). */
  onceCounts(): Map<string, number>;
}

function fmt(fields?: Record<string, unknown>): string {
  if (!fields) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const s = typeof v === 'string' ? v : typeof v === 'bigint' ? v.toString() : JSON.stringify(v);
    parts.push(`${k}=${/\s/.test(s) ? JSON.stringify(s) : s}`);
  }
  return parts.length ? ' ' + parts.join(' ') : '';
}

export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const seen = new Map<string, number>();
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (rank[lvl] < rank[logger.level]) return;
    write(`${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} ${msg}${fmt(fields)}\n`);
  };
  const logger: Logger = {
    level,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    once(key, msg, fields) {
      const n = (seen.get(key) ?? 0) + 1;
      seen.set(key, n);
      if (n === 1) emit('warn', msg, fields);
    },
    onceCounts: () => new Map(seen),
  };
  return logger;
}

export function isLogLevel(s: string): s is LogLevel {
  return s in rank;
}
