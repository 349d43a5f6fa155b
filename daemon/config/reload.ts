/**
 * Hot reload of the configuration file: on SIGHUP, and when the file changes
 * (chokidar watching the file's directory, so that an editor's
 * write-and-rename and a Kubernetes ConfigMap update — a new timestamped
 * directory behind the `..data` symbolic link, swapped atomically — are seen
 * as well as an in-place write). The file is read whole through its links;
 * content identical to the running one is not applied again (a watcher
 * event without a change). An invalid file is rejected with a logged error
 * and counted (`gotrail_config_reloads_total{result="rejected"}`); the
 * running configuration stays.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { LoadedConfig } from './file.ts';
import { readConfigBytes } from './read.ts';
import type { Logger } from '../util/log.ts';

export type ReloadResult = 'applied' | 'rejected' | 'unchanged';
export const RELOAD_RESULTS: readonly ReloadResult[] = ['applied', 'rejected', 'unchanged'];

/** Applies a validated file; returns the settings that wait for a restart; throws (an Error naming the setting) to reject it. */
export type ApplyConfig = (loaded: LoadedConfig) => { pendingRestart: string[] };

/** What /status shows of the configuration. */
export interface ConfigStatus {
  /** `file` (with `path`) or `flags and environment` */
  source: 'file' | 'flags and environment';
  path?: string;
  /** 1 for the configuration the agent started with, +1 per applied reload */
  generation: number;
  /** sha256 of the running file */
  digest?: string;
  appliedAt: string;
  lastReload?: { at: string; result: ReloadResult; trigger: string; error?: string };
  /** settings changed in the file that take effect at the next start */
  pendingRestart: string[];
  /** where each setting not at its default comes from (flag, variable, `config file`) */
  sources: Record<string, string>;
}

/** Coalesces a burst of file events (a ConfigMap swap makes several) into one reload. */
const DEBOUNCE_MS = 50;

export class ConfigReloader {
  private readonly log: Logger;
  private readonly apply: ApplyConfig;
  private readonly state: ConfigStatus;
  private readonly counts: Record<ReloadResult, number> = { applied: 0, rejected: 0, unchanged: 0 };
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pendingTrigger = '';
  private readonly onHup = (): void => this.schedule('SIGHUP', 0);
  private closed = false;
  private rejectedDigest: string | undefined;

  private readonly load: ((path: string) => LoadedConfig) | undefined;
  /**
   * What the file was at start when it was no regular file (a pipe, as
   * `--config <(…)` gives, a FIFO, a device): read once, it cannot be read
   * again. A pipe read again is empty (an empty file is a valid
   * configuration: every setting at its default, every selection rule
   * gone), a FIFO's open waits for a writer; so it is neither watched nor
   * reloaded.
   */
  private readonly readOnce: string | undefined;

  /**
   * `initial`: the file the agent started with and `load`, the function that
   * reads and validates it (loadConfigFile; undefined without --config:
   * nothing is watched).
   */
  constructor(log: Logger, initial: { loaded: LoadedConfig; load: (path: string) => LoadedConfig } | undefined, sources: Record<string, string>, apply: ApplyConfig) {
    this.log = log;
    this.apply = apply;
    this.load = initial?.load;
    this.readOnce = initial ? notRegular(initial.loaded.path) : undefined;
    this.state = {
      source: initial ? 'file' : 'flags and environment',
      path: initial?.loaded.path,
      generation: 1,
      digest: initial?.loaded.digest,
      appliedAt: new Date().toISOString(),
      pendingRestart: [],
      sources,
    };
  }

  /** Starts listening for SIGHUP and watching the file (when there is one). */
  start(): void {
    process.on('SIGHUP', this.onHup);
    const path = this.state.path;
    if (!path || this.readOnce) return;
    // the directory, not the file: the file's inode changes with every
    // rename-over and ConfigMap swap, which a watch on the file would miss
    // events of the file itself and of a mounted volume's links and
    // timestamped directories (`..data`, `..2026_…`); other files of the
    // directory (a log written beside it) are not the configuration
    const name = basename(path);
    this.watcher = watch(dirname(path), {
      depth: 0, ignoreInitial: true, followSymlinks: false, persistent: false,
      ignored: (p: string) => p !== dirname(path) && basename(p) !== name && !basename(p).startsWith('..'),
    });
    this.watcher.on('all', (event, p) => this.schedule(`${event} ${p}`, DEBOUNCE_MS));
    this.watcher.on('error', (e) => this.log.once('config.watch', 'watching the configuration file failed; reload with SIGHUP', { error: (e as Error).message }));
  }

  /** Resolves once the watcher is ready (tests). */
  async ready(): Promise<void> {
    const w = this.watcher;
    if (!w) return;
    await new Promise<void>((r) => {
      w.once('ready', () => r());
      setTimeout(r, 2000).unref();
    });
  }

  private schedule(trigger: string, delayMs: number): void {
    if (this.closed) return;
    this.pendingTrigger ||= trigger;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const t = this.pendingTrigger;
      this.pendingTrigger = '';
      this.reload(t);
    }, delayMs);
  }

  /** Reads the file again and applies it when it changed. Never throws. */
  reload(trigger: string): ReloadResult {
    const path = this.state.path;
    if (!path || !this.load) {
      // SIGHUP (systemd's reload) without --config: nothing to read, and no reason to stop
      this.log.info('reload asked, but the configuration comes from flags and environment only (no --config): nothing to reload', { trigger });
      this.counts.unchanged++;
      return 'unchanged';
    }
    if (this.readOnce) {
      if (trigger === 'SIGHUP') this.log.info(`reload asked, but the configuration was read from ${this.readOnce}, which cannot be read again: nothing to reload (restart to change it)`, { file: path, trigger });
      this.counts.unchanged++;
      return 'unchanged';
    }
    let result: ReloadResult;
    let error: string | undefined;
    // A file become a FIFO would hang the agent in its open (waiting for a
    // writer), a device be read as an empty configuration: only a regular
    // file is read again (through its links, as a ConfigMap's are)
    const now = notRegular(path);
    if (now) {
      return this.report('rejected', trigger, `${path}: ${now} now, not a configuration file`);
    }
    // a rejected content seen again (a second event of one write) is not reported twice
    let digest: string | undefined;
    try {
      digest = createHash('sha256').update(readConfigBytes(path)).digest('hex');
    } catch {
      /* reported by the load below */
    }
    if (digest !== undefined && digest === this.rejectedDigest && trigger !== 'SIGHUP') return 'rejected';
    this.rejectedDigest = undefined;
    try {
      const loaded = this.load(path);
      if (loaded.digest === this.state.digest) {
        result = 'unchanged';
      } else {
        const { pendingRestart } = this.apply(loaded);
        result = 'applied';
        this.state.generation++;
        this.state.digest = loaded.digest;
        this.state.appliedAt = new Date().toISOString();
        this.state.pendingRestart = pendingRestart;
      }
    } catch (e) {
      result = 'rejected';
      this.rejectedDigest = digest;
      // a ConfigFileError lists each problem
      const problems = (e as { problems?: unknown }).problems;
      error = Array.isArray(problems) ? problems.join('; ') : (e as Error).message;
    }
    return this.report(result, trigger, error);
  }

  /** Counts, records and logs one reload's result. */
  private report(result: ReloadResult, trigger: string, error?: string): ReloadResult {
    const path = this.state.path;
    // a watcher event that changed nothing (a touch, the old directory's removal) is not worth a line
    if (result === 'unchanged' && trigger !== 'SIGHUP') return result;
    this.counts[result]++;
    this.state.lastReload = { at: new Date().toISOString(), result, trigger, ...(error ? { error } : {}) };
    if (result === 'rejected') {
      this.log.error('configuration reload rejected: the running configuration is kept', { file: path, generation: this.state.generation, error });
    } else if (result === 'applied') {
      this.log.info('configuration reloaded', { file: path, generation: this.state.generation, trigger, ...(this.state.pendingRestart.length ? { pendingRestart: this.state.pendingRestart.join(',') } : {}) });
      if (this.state.pendingRestart.length) this.log.warn('configuration settings changed that take effect at the next start', { settings: this.state.pendingRestart.join(',') });
    } else {
      this.log.info('configuration unchanged', { file: path, generation: this.state.generation, trigger });
    }
    return result;
  }

  /** Updates where settings come from after an applied reload. */
  setSources(sources: Record<string, string>): void {
    this.state.sources = sources;
  }

  /** The state, with the sources of the settings not at their default. */
  status(): ConfigStatus {
    const sources = Object.fromEntries(Object.entries(this.state.sources).filter(([, v]) => v !== 'default'));
    return { ...this.state, pendingRestart: [...this.state.pendingRestart], sources };
  }

  /** gotrail_config_reloads_total{result}, gotrail_config_generation, gotrail_config_last_reload_successful. */
  registerMetrics(reg: Registry): void {
    const counts = this.counts;
    const state = this.state;
    new Counter({
      name: 'gotrail_config_reloads_total',
      help: 'Configuration file reloads, by result (applied; rejected: invalid, the running configuration kept; unchanged: SIGHUP with the same content)',
      labelNames: ['result'], registers: [reg],
      collect() {
        this.reset();
        for (const r of RELOAD_RESULTS) this.inc({ result: r }, counts[r]);
      },
    });
    new Gauge({
      name: 'gotrail_config_generation', help: 'Generation of the running configuration: 1 at start, +1 per applied reload', registers: [reg],
      collect() {
        this.set(state.generation);
      },
    });
    new Gauge({
      name: 'gotrail_config_last_reload_successful', help: 'Whether the last configuration reload was applied or unchanged (1) or rejected (0)', registers: [reg],
      collect() {
        this.set(state.lastReload?.result === 'rejected' ? 0 : 1);
      },
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    process.off('SIGHUP', this.onHup);
    if (this.timer) clearTimeout(this.timer);
    await this.watcher?.close();
    this.watcher = undefined;
  }
}

/**
 * What `path` is when it is no regular file (`a pipe`, `a FIFO`, `a
 * device`, `a directory`, …); undefined for a regular file, and when it
 * cannot be looked at (the read that follows says why).
 */
function notRegular(path: string): string | undefined {
  let st;
  try {
    st = statSync(path);
  } catch {
    return undefined;
  }
  if (st.isFile()) return undefined;
  // a shell's `<(…)` and standard input are named by a descriptor
  if (st.isFIFO()) return /^\/(dev\/fd\/|dev\/stdin$|proc\/)/.test(path) ? 'a pipe' : 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isDirectory()) return 'a directory';
  return 'no regular file';
}
