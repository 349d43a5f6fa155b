/**
 * Why a binary could not be analysed.
 *
 * - `IO`: the file could not be opened or read (missing, permission, I/O error).
 * - `NOT_ELF`: the file is not an ELF file.
 * - `NOT_GO`: an ELF executable, but not one built by the Go toolchain.
 * - `TRUNCATED`: the headers describe data beyond the end of the file.
 * - `CORRUPT`: the headers or Go metadata are inconsistent or absurd.
 * - `UNSUPPORTED_ARCH`: not a 64-bit little-endian x86-64 ELF file.
 */
export type GoBinaryErrorCode = 'IO' | 'NOT_ELF' | 'NOT_GO' | 'TRUNCATED' | 'CORRUPT' | 'UNSUPPORTED_ARCH';

/**
 * The only error type the analysis module throws for a bad or unreadable
 * binary. The message always names the file and what was wrong with it, so
 * callers can log it as is.
 */
export class GoBinaryError extends Error {
  /** Category of the failure; see {@link GoBinaryErrorCode}. */
  readonly code: GoBinaryErrorCode;
  /** The file being analysed. */
  readonly path: string;
  /** What was wrong, without the file name. */
  readonly detail: string;

  constructor(code: GoBinaryErrorCode, path: string, detail: string, options?: { cause?: unknown }) {
    super(`${path}: ${detail}`, options);
    this.name = 'GoBinaryError';
    this.code = code;
    this.path = path;
    this.detail = detail;
  }
}

/** Formats a file offset or address the way readelf and objdump print them. */
export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
