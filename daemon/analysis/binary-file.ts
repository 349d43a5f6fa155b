import fs from 'node:fs';
import { GoBinaryError, hex } from './errors.ts';
import type { GoBinaryErrorCode } from './errors.ts';

/**
 * Largest single read the analysis will make. Everything it reads (header
 * tables, symbol and string tables, the parts of the pclntab it needs, one
 * function's code) is far smaller even in very large binaries, so a bigger
 * request means a corrupt length field.
 */
export const MAX_READ = 512 * 1024 * 1024;

/**
 * A file read with positioned reads only, so that analysing a large binary
 * costs memory in proportion to the tables read, not to the file size.
 * Every read is bounds-checked and failures become {@link GoBinaryError}s.
 */
export class BinaryFile {
  readonly path: string;
  readonly size: number;
  #fd: number | undefined;
  /** The bytes of an in-memory image ({@link BinaryFile.fromImage}), read instead of a file. */
  #image: Buffer | undefined;
  #closed = false;

  private constructor(path: string, fd: number | undefined, size: number, image?: Buffer) {
    this.path = path;
    this.#fd = fd;
    this.size = size;
    this.#image = image;
  }

  /**
   * An ELF image already in memory, read through the same bounds checks as a
   * file; `name` stands for the path in error messages. The image is not copied.
   */
  static fromImage(name: string, image: Buffer): BinaryFile {
    return new BinaryFile(name, undefined, image.length, image);
  }

  /**
   * Opens `path` for reading; throws `IO` if it cannot be opened or is not a
   * regular file. Opened without blocking: opening a FIFO for reading waits
   * for a writer, which would hang the thread (`gotrail inspect` given one,
   * or the agent given a path replaced by one); a regular file ignores it.
   */
  static open(path: string): BinaryFile {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      throw new GoBinaryError('IO', path, `cannot open: ${errorText(err)}`, { cause: err });
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new GoBinaryError('IO', path, 'not a regular file');
      return new BinaryFile(path, fd, st.size);
    } catch (err) {
      fs.closeSync(fd);
      if (err instanceof GoBinaryError) throw err;
      throw new GoBinaryError('IO', path, `cannot stat: ${errorText(err)}`, { cause: err });
    }
  }

  /** Throws a {@link GoBinaryError} about this file. */
  fail(code: GoBinaryErrorCode, detail: string): never {
    throw new GoBinaryError(code, this.path, detail);
  }

  /**
   * Reads exactly `length` bytes at `offset`. `what` names the data for the
   * error message. Past the end of the file is `TRUNCATED`; a negative,
   * non-integer or absurdly large request is `CORRUPT`.
   */
  read(offset: number, length: number, what: string): Buffer {
    this.checkRange(offset, length, what);
    const buf = Buffer.allocUnsafe(length);
    this.fill(buf, offset, what);
    return buf;
  }

  /** Reads up to `length` bytes at `offset`, fewer if the file ends first. */
  readUpTo(offset: number, length: number, what: string): Buffer {
    if (!Number.isSafeInteger(offset) || offset < 0) this.fail('CORRUPT', `${what}: invalid offset ${offset}`);
    const n = Math.max(0, Math.min(length, this.size - offset));
    return this.read(offset, n, what);
  }

  /** Throws unless [offset, offset+length) lies within the file. */
  checkRange(offset: number, length: number, what: string): void {
    if (Number.isSafeInteger(length) && length > MAX_READ) {
      this.fail('CORRUPT', `${what}: absurd size ${length} bytes at offset ${hex(offset)}`);
    }
    this.checkExtent(offset, length, what);
  }

  /** Like {@link checkRange} without the size limit: for extents that are validated, not read whole. */
  checkExtent(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      this.fail('CORRUPT', `${what}: invalid file range (offset ${offset}, length ${length})`);
    }
    if (offset + length > this.size) {
      this.fail(
        'TRUNCATED',
        `${what} (offset ${hex(offset)}, ${length} bytes) extends past the end of the file (${this.size} bytes); file truncated?`,
      );
    }
  }

  private fill(buf: Buffer, offset: number, what: string): void {
    if (this.#closed) this.fail('IO', `read of ${what} after close`);
    if (this.#image !== undefined) {
      this.#image.copy(buf, 0, offset, offset + buf.length);
      return;
    }
    if (this.#fd === undefined) this.fail('IO', `read of ${what} after close`);
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.#fd, buf, done, buf.length - done, offset + done);
      } catch (err) {
        throw new GoBinaryError('IO', this.path, `reading ${what}: ${errorText(err)}`, { cause: err });
      }
      // The file shrank since it was opened (a binary being replaced).
      if (n === 0) this.fail('TRUNCATED', `${what}: unexpected end of file at offset ${hex(offset + done)}`);
      done += n;
    }
  }

  /** Reads a little-endian u64 from `buf` as a number; values above 2^53 are `CORRUPT`. */
  u64(buf: Buffer, pos: number, what: string): number {
    const lo = buf.readUInt32LE(pos);
    const hi = buf.readUInt32LE(pos + 4);
    if (hi >= 0x200000) this.fail('CORRUPT', `${what}: value ${hex(buf.readBigUInt64LE(pos))} out of range`);
    return hi * 0x100000000 + lo;
  }

  /** Releases the file descriptor; further reads throw `IO`. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    try {
      fs.closeSync(fd);
    } catch {
      // Nothing useful to do: the descriptor is gone either way.
    }
  }
}

/**
 * Sequential-ish reader over one region of a file through a bounded window,
 * for walking tables too large to want in memory at once (symbol names,
 * function records). Accesses in ascending order cost one read per window.
 */
export class WindowReader {
  readonly #file: BinaryFile;
  readonly #start: number;
  readonly #end: number;
  readonly #what: string;
  readonly #windowSize: number;
  #buf: Buffer = Buffer.alloc(0);
  #bufStart = 0;

  /** Region [start, end) of `file`; it must already be known to lie within the file. */
  constructor(file: BinaryFile, start: number, end: number, what: string, windowSize = 1 << 20) {
    file.checkExtent(start, end - start, what);
    this.#file = file;
    this.#start = start;
    this.#end = end;
    this.#what = what;
    this.#windowSize = windowSize;
  }

  /**
   * Returns a buffer and position such that `length` bytes from region
   * offset `off` (relative to the region start) are at buf[pos..pos+length).
   */
  bytes(off: number, length: number): { buf: Buffer; pos: number } {
    const abs = this.#start + off;
    if (!Number.isSafeInteger(off) || off < 0 || length < 0 || abs + length > this.#end) {
      this.#file.fail('CORRUPT', `${this.#what}: offset ${hex(off)} (+${length}) outside the table (${this.#end - this.#start} bytes)`);
    }
    if (abs < this.#bufStart || abs + length > this.#bufStart + this.#buf.length) this.#load(abs, length);
    return { buf: this.#buf, pos: abs - this.#bufStart };
  }

  /**
   * Returns the NUL-terminated string at region offset `off` as a slice of
   * the window (valid until the next call), at most `maxLength` bytes long.
   */
  cstring(off: number, maxLength: number): Buffer {
    const abs = this.#start + off;
    if (!Number.isSafeInteger(off) || off < 0 || abs >= this.#end) {
      this.#file.fail('CORRUPT', `${this.#what}: string offset ${hex(off)} outside the table (${this.#end - this.#start} bytes)`);
    }
    for (let want = Math.min(this.#windowSize, maxLength + 1); ; want = Math.min(want * 4, maxLength + 1)) {
      if (abs < this.#bufStart || abs >= this.#bufStart + this.#buf.length) this.#load(abs, 1);
      const pos = abs - this.#bufStart;
      const nul = this.#buf.indexOf(0, pos);
      if (nul >= 0 && nul - pos <= maxLength) return this.#buf.subarray(pos, nul);
      const available = this.#bufStart + this.#buf.length - abs;
      if (available > maxLength || abs + available >= this.#end) {
        this.#file.fail('CORRUPT', `${this.#what}: unterminated or over-long string at offset ${hex(off)}`);
      }
      this.#load(abs, Math.min(want, this.#end - abs));
    }
  }

  #load(abs: number, length: number): void {
    const size = Math.min(Math.max(length, this.#windowSize), this.#end - abs);
    this.#buf = this.#file.read(abs, size, this.#what);
    this.#bufStart = abs;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
