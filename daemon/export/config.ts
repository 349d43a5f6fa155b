/**
 * The export settings from the command line and the standard OpenTelemetry
 * environment variables: a flag wins over its variable, a variable over the
 * configuration file, the file over the default. An empty variable counts as
 * unset, and a variable's value that cannot be used (not a number, out of
 * range, an exporter gotrail does not have) is ignored with a warning, as the
 * specification's environment variables require ("generate a warning and
 * gracefully ignore the setting"); a flag's is refused.
 *
 * | setting              | flag                       | variable                         | default |
 * |----------------------|----------------------------|----------------------------------|---------|
 * | exporter             | --exporter                 | OTEL_TRACES_EXPORTER             | otlp    |
 * | maxQueueSize         | --max-queue-size           | OTEL_BSP_MAX_QUEUE_SIZE          | 65536   |
 * | maxExportBatchSize   | --max-export-batch-size    | OTEL_BSP_MAX_EXPORT_BATCH_SIZE   | 2048    |
 * | scheduledDelayMillis | --schedule-delay           | OTEL_BSP_SCHEDULE_DELAY          | 1000    |
 * | exportTimeoutMillis  | --export-timeout           | OTEL_BSP_EXPORT_TIMEOUT          | 30000   |
 * | maxConcurrentExports | --max-concurrent-exports   | (none in the specification)      | 2       |
 */
import { BATCHER_DEFAULTS, type BatcherOptions } from './batcher.ts';
import type { ExporterKind } from './exporters.ts';
import { parseTimerMillis } from '../util/timers.ts';

export const EXPORTER_KINDS: readonly ExporterKind[] = ['otlp', 'console', 'none'];

/** A setting that cannot be used; the message names the flag or variable and the value. */
export class ExportConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportConfigError';
  }
}

/** Command-line values as given (strings), undefined when absent. */
export interface ExportFlags {
  exporter?: string;
  maxQueueSize?: string;
  maxExportBatchSize?: string;
  scheduleDelay?: string;
  exportTimeout?: string;
  maxConcurrentExports?: string;
}

/** Values from the configuration file (already validated), undefined when absent. */
export interface ExportFileValues {
  exporter?: ExporterKind;
  maxQueueSize?: number;
  maxExportBatchSize?: number;
  scheduledDelayMillis?: number;
  exportTimeoutMillis?: number;
  maxConcurrentExports?: number;
}

export interface ExportConfig {
  exporter: ExporterKind;
  /** Every option set (defaults applied); the batcher still clamps the batch size to the queue size. */
  batcher: Required<BatcherOptions>;
  /** Where each setting came from, e.g. `{ maxQueueSize: 'OTEL_BSP_MAX_QUEUE_SIZE' }` or `'config file'` (for the start-up log). */
  sources: Record<string, string>;
  /** Variables whose value was ignored, one sentence each naming the variable, the value and what is used instead (to be logged). */
  warnings: string[];
}

interface NumberSetting {
  key: keyof BatcherOptions;
  flag: keyof ExportFlags;
  flagName: string;
  env?: string;
  min: number;
  /** a duration that becomes a timer: at most what a timer waits */
  timer?: boolean;
  unit: string;
}

const NUMBER_SETTINGS: readonly NumberSetting[] = [
  { key: 'maxQueueSize', flag: 'maxQueueSize', flagName: '--max-queue-size', env: 'OTEL_BSP_MAX_QUEUE_SIZE', min: 1, unit: 'spans' },
  { key: 'maxExportBatchSize', flag: 'maxExportBatchSize', flagName: '--max-export-batch-size', env: 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', min: 1, unit: 'spans' },
  { key: 'scheduledDelayMillis', flag: 'scheduleDelay', flagName: '--schedule-delay', env: 'OTEL_BSP_SCHEDULE_DELAY', min: 0, timer: true, unit: 'milliseconds' },
  { key: 'exportTimeoutMillis', flag: 'exportTimeout', flagName: '--export-timeout', env: 'OTEL_BSP_EXPORT_TIMEOUT', min: 0, timer: true, unit: 'milliseconds (0: no limit)' },
  { key: 'maxConcurrentExports', flag: 'maxConcurrentExports', flagName: '--max-concurrent-exports', min: 1, unit: 'exports' },
];

function parseCount(where: string, raw: string, min: number, unit: string, timer?: boolean): number {
  if (timer) {
    const r = parseTimerMillis(raw, min, unit);
    if ('problem' in r) throw new ExportConfigError(`${where}: ${r.problem}`);
    return r.ms;
  }
  const s = raw.trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new ExportConfigError(`${where}: expected an integer >= ${min} (${unit}), got "${raw}"`);
  return n;
}

function parseExporter(where: string, raw: string): ExporterKind {
  const names = raw.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  const name = names[0];
  if (names.length !== 1 || !(EXPORTER_KINDS as readonly string[]).includes(name!)) {
    throw new ExportConfigError(`${where}: expected otlp, console or none, got "${raw}"${names.length > 1 ? ' (one exporter only)' : ''}`);
  }
  return name as ExporterKind;
}

/**
 * OTEL_TRACES_EXPORTER: a comma-separated list in the specification, whose
 * values are case-insensitive; gotrail sends to one exporter, so of a list the
 * first is used and the others named in a warning. An unknown name makes the
 * whole value ignored with a warning (undefined returned).
 */
function exporterFromEnv(raw: string, warnings: string[], fallback: () => ExporterKind): ExporterKind | undefined {
  const names = raw.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  const unknown = names.filter((n) => !(EXPORTER_KINDS as readonly string[]).includes(n));
  if (unknown.length) {
    warnings.push(`OTEL_TRACES_EXPORTER: expected otlp, console or none, got "${raw}": ignored, using ${fallback()}`);
    return undefined;
  }
  const [first, ...rest] = [...new Set(names)] as ExporterKind[];
  if (rest.length) warnings.push(`OTEL_TRACES_EXPORTER: gotrail sends spans to one exporter, got "${raw}": using ${first}, not ${rest.join(', ')}`);
  return first;
}

/** The source name of a setting taken from the configuration file. */
export const FROM_FILE = 'config file';

/**
 * Resolves the export settings: flag, else environment variable, else the
 * configuration file's value, else default.
 * @throws ExportConfigError naming the flag when a flag's value is not valid
 *   (the agent refuses to start rather than run with a flag it ignored); a
 *   variable's is ignored and named in `warnings`.
 */
export function resolveExportConfig(flags: ExportFlags, env: NodeJS.ProcessEnv = process.env, file: ExportFileValues = {}): ExportConfig {
  const sources: Record<string, string> = {};
  const warnings: string[] = [];
  const fromEnv = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v;
  };
  let exporter: ExporterKind = 'otlp';
  sources['exporter'] = 'default';
  if (flags.exporter !== undefined) {
    exporter = parseExporter('--exporter', flags.exporter);
    sources['exporter'] = '--exporter';
  } else {
    const v = fromEnv('OTEL_TRACES_EXPORTER');
    const fromVar = v !== undefined ? exporterFromEnv(v, warnings, () => file.exporter ?? exporter) : undefined;
    if (fromVar !== undefined) {
      exporter = fromVar;
      sources['exporter'] = 'OTEL_TRACES_EXPORTER';
    } else if (file.exporter !== undefined) {
      exporter = file.exporter;
      sources['exporter'] = FROM_FILE;
    }
  }
  const batcher: Required<BatcherOptions> = { ...BATCHER_DEFAULTS };
  for (const s of NUMBER_SETTINGS) {
    sources[s.key] = 'default';
    const f = flags[s.flag];
    if (f !== undefined) {
      batcher[s.key] = parseCount(s.flagName, f, s.min, s.unit, s.timer);
      sources[s.key] = s.flagName;
      continue;
    }
    const v = s.env ? fromEnv(s.env) : undefined;
    let fromVar: number | undefined;
    const fromFile = file[s.key as keyof ExportFileValues] as number | undefined;
    if (v !== undefined && s.env) {
      try {
        fromVar = parseCount(s.env, v, s.min, s.unit, s.timer);
      } catch (e) {
        warnings.push(`${(e as Error).message}: ignored, using ${fromFile ?? batcher[s.key]}${fromFile !== undefined ? ' (configuration file)' : ''}`);
      }
    }
    if (fromVar !== undefined && s.env) {
      batcher[s.key] = fromVar;
      sources[s.key] = s.env;
    } else if (fromFile !== undefined) {
      batcher[s.key] = fromFile;
      sources[s.key] = FROM_FILE;
    }
  }
  return { exporter, batcher, sources, warnings };
}
