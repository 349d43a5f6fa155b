/** Values copied out of Go programs by the probes, made readable. */

/** A Go string copied by a probe: `len` is the Go length, the copy may be shorter. */
export function goString(bytes: Buffer, len: number): string {
  if (len <= 0) return '';
  return bytes.subarray(0, Math.min(len, bytes.length)).toString('utf8');
}

/**
 * A Go string copied by a probe, read in place: `len` is the Go length, of
 * which at most `max` bytes (the field's size) were copied to `at`.
 */
export function stringAt(buf: Buffer, at: number, max: number, len: number): string {
  if (len <= 0) return '';
  return buf.toString('utf8', at, at + (len < max ? len : max));
}

/**
 * Recent values kept per {@link RepeatedString}, direct-mapped by a hash of
 * their length and last bytes: a server's clients come over a few dozen
 * kept-alive connections at once, so consecutive events alternate between
 * that many peer addresses.
 */
const RECENT_SLOTS = 256;

/**
 * {@link stringAt} for a field that mostly repeats (a method, a server's
 * host, a kept-alive connection's peer): the bytes are compared with the
 * last string read, then with the recent string of the same hash slot, and
 * a match is returned again, so no new string (nor derived value) is made.
 * Also keeps one value derived from the string.
 */
export class RepeatedString<T = undefined> {
  #last = '';
  #derived: T | undefined;
  #derive: ((s: string) => T) | undefined;
  // parallel arrays rather than an entry object per slot: a miss replaces a string, allocating nothing more
  readonly #recent: string[] = new Array<string>(RECENT_SLOTS).fill('');
  readonly #recentDerived: Array<T | undefined>;

  constructor(derive?: (s: string) => T) {
    this.#derive = derive;
    // the empty string may come first: it has its derived value too
    this.#derived = derive ? derive('') : undefined;
    this.#recentDerived = new Array<T | undefined>(RECENT_SLOTS).fill(this.#derived);
  }

  /** The string at `at` (see {@link stringAt}). */
  read(buf: Buffer, at: number, max: number, len: number): string {
    const n = len <= 0 ? 0 : len < max ? len : max;
    const last = this.#last;
    if (last.length === n && sameAscii(buf, at, n, last)) return last;
    // FNV-1a over the length and the last (up to) 4 bytes: where peers' addresses differ (their ports)
    let h = Math.imul(0x811c9dc5 ^ n, 0x01000193);
    for (let i = n > 4 ? n - 4 : 0; i < n; i++) h = Math.imul(h ^ buf[at + i]!, 0x01000193);
    const slot = (h ^ (h >>> 15)) & (RECENT_SLOTS - 1);
    const recent = this.#recent[slot]!;
    if (recent.length === n && sameAscii(buf, at, n, recent)) {
      this.#last = recent;
      this.#derived = this.#recentDerived[slot];
      return recent;
    }
    const s = n === 0 ? '' : buf.toString('utf8', at, at + n);
    const derived = this.#derive ? this.#derive(s) : undefined;
    this.#last = s;
    this.#derived = derived;
    this.#recent[slot] = s;
    this.#recentDerived[slot] = derived;
    return s;
  }

  /** The derived value of the string {@link read} returned last. */
  get derived(): T {
    return this.#derived as T;
  }
}

/**
 * Whether the `n` bytes at `at` are `s` (of length `n`): compared by code
 * unit, which is a match by byte only for ASCII, so a non-ASCII `s` never
 * matches. From the end: values that differ mostly differ there (ports, ids
 * in paths), after a shared prefix.
 */
function sameAscii(buf: Buffer, at: number, n: number, s: string): boolean {
  for (let i = n - 1; i >= 0; i--) {
    const c = s.charCodeAt(i);
    if (buf[at + i] !== c || c >= 0x80) return false;
  }
  return true;
}

/**
 * Splits "host:port" / "[v6]:port"; the port is undefined when absent or not
 * numeric. Without regular expressions: it runs twice for every HTTP span.
 */
export function splitHostPort(s: string): { host: string; port?: number } {
  if (s.charCodeAt(0) === 0x5b /* [ */) {
    const close = s.indexOf(']');
    if (close >= 0 && (close === s.length - 1 || (s.charCodeAt(close + 1) === 0x3a /* : */ && digitsFrom(s, close + 2)))) {
      const host = s.slice(1, close);
      if (host.indexOf(']') < 0) return close === s.length - 1 ? { host, port: undefined } : { host, port: port(s, close + 2) };
    }
  }
  const colon = s.indexOf(':');
  if (colon < 0) return { host: s, port: undefined };
  if (s.indexOf(':', colon + 1) >= 0 || !digitsFrom(s, colon + 1)) return { host: s };
  return { host: s.slice(0, colon), port: port(s, colon + 1) };
}

/** Whether s has one or more characters from `from` on, all decimal digits. */
function digitsFrom(s: string, from: number): boolean {
  if (from >= s.length) return false;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function port(s: string, from: number): number | undefined {
  const p = Number(s.slice(from));
  return p <= 65535 ? p : undefined;
}
