/**
 * The agent's log: one line per record on stderr, leveled, with a helper that
 * logs a recurring problem once and counts the repeats (the hot path must
 * never flood the log). Under systemd, when stderr is the journal, each line
 * starts with its syslog priority (`<3>` … `<7>`, sd-daemon(3)) instead of a
 * timestamp, so the journal records the level as PRIORITY
 * (`journalctl -u gotrail -p warning`); fields stay `key=value`.
 */
import { fstatSync } from 'node:fs';

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

const syslogPriority: Record<Exclude<LogLevel, 'silent'>, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/**
 * True when file descriptor `fd` is the stream systemd connected to the journal:
 * `JOURNAL_STREAM` ("DEVICE:INODE", systemd.exec(5)) names that very file.
 */
export function isJournalStream(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
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

/**
 * @param write    where lines go; default: stderr.
 * @param journal  prefix lines with their syslog priority and leave the time to
 *   the journal; default: when lines go to stderr and it is the journal
 *   ({@link isJournalStream}).
 */
export function createLogger(
  level: LogLevel = 'info',
  write?: (line: string) => void,
  journal: boolean = write === undefined && isJournalStream(),
): Logger {
  const out = write ?? ((l: string): void => void process.stderr.write(l));
  const seen = new Map<string, number>();
  const emit = (lvl: Exclude<LogLevel, 'silent'>, msg: string, fields?: Record<string, unknown>): void => {
    if (rank[lvl] < rank[logger.level]) return;
    const head = journal ? `<${syslogPriority[lvl]}>` : `${new Date().toISOString()} `;
    out(`${head}${lvl.toUpperCase().padEnd(5)} ${msg}${fmt(fields)}\n`);
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
