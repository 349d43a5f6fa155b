/**
 * Watches the files of attached binaries, so that a binary rewritten in place
 * loses its idle links before a process of the new content can meet them
 * (uprobes belong to the inode: the kernel would put the old code's
 * breakpoints into the new code). The exec hook holds any process that
 * still races the watcher; the watcher makes that rare.
 *
 * Paths are those the processes named, seen from the agent's mount
 * namespace; a binary visible only inside another mount namespace is not
 * watched (the exec hook still protects it).
 */
import { statSync } from 'node:fs';
import { watch, type FSWatcher } from 'chokidar';
import { inodeString } from './attachments.ts';
import type { Logger } from '../util/log.ts';

export class BinaryWatcher {
  private readonly log: Logger;
  private readonly onChange: (inode: string) => void;
  /** path → device:inode it had when watching started */
  private readonly watched = new Map<string, string>();
  private watcher: FSWatcher | undefined;

  constructor(log: Logger, onChange: (inode: string) => void) {
    this.log = log;
    this.onChange = onChange;
  }

  /** Watches exactly these files (path and the inode they were attached as). */
  sync(files: Array<{ path: string; inode: string }>): void {
    const want = new Map<string, string>();
    for (const f of files) {
      try {
        const st = statSync(f.path, { bigint: true });
        if (inodeString(st) === f.inode) want.set(f.path, f.inode);
      } catch {
        /* not visible from here */
      }
    }
    const add = [...want.keys()].filter((p) => !this.watched.has(p));
    const remove = [...this.watched.keys()].filter((p) => !want.has(p));
    for (const p of remove) this.watched.delete(p);
    for (const [p, i] of want) this.watched.set(p, i);
    if (remove.length) void this.watcher?.unwatch(remove);
    if (!add.length) return;
    if (!this.watcher) {
      this.watcher = watch(add, { ignoreInitial: true, persistent: false, atomic: false });
      this.watcher.on('change', (p) => this.changed(p));
      this.watcher.on('error', (e) => this.log.once('watch.error', 'watching attached binaries failed; rewritten binaries are caught at exec only', { error: (e as Error).message }));
    } else {
      this.watcher.add(add);
    }
  }

  private changed(path: string): void {
    const inode = this.watched.get(path);
    if (inode) this.onChange(inode);
  }

  async close(): Promise<void> {
    await this.watcher?.close();
    this.watcher = undefined;
    this.watched.clear();
  }
}
