/**
 * Reading the configuration file, bounded. Apart from file.ts, which loads
 * the YAML parser and the schema, so that the reloader can read the file
 * without them.
 */
import { closeSync, openSync, readSync } from 'node:fs';

/** The largest configuration file read: far above any real one (the example with every key is ~10 KiB). */
export const CONFIG_FILE_MAX_BYTES = 1 << 20;

/**
 * Reads a configuration file whole, at most {@link CONFIG_FILE_MAX_BYTES}:
 * a path given by mistake (a device such as /dev/zero, a log file) must
 * neither hang the agent nor fill its memory. Pipes (`--config <(…)`) work.
 * @throws Error (fs errors, or `larger than 1 MiB …`)
 */
export function readConfigBytes(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(CONFIG_FILE_MAX_BYTES + 1);
    let n = 0;
    for (let r; n < buf.length && (r = readSync(fd, buf, n, buf.length - n, null)) > 0; ) n += r;
    if (n > CONFIG_FILE_MAX_BYTES) throw new Error(`larger than ${CONFIG_FILE_MAX_BYTES >> 20} MiB: not a configuration file?`);
    return Buffer.from(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
}
