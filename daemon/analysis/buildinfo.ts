import { WindowReader } from './binary-file.ts';
import { PF_W, PF_X, PT_LOAD } from './elf.ts';
import type { ElfFile } from './elf.ts';
import { hex } from './errors.ts';

/** A module as recorded in a Go binary's build information. */
export interface GoModule {
  /** Module path, e.g. `golang.org/x/net`. */
  path: string;
  /** Module version, e.g. `v0.24.0`; `(devel)` for a main module built from a work tree. */
  version: string;
  /** go.sum checksum (`h1:…`), when recorded. */
  sum?: string;
  /** The `replace` directive that applied to this module: a local directory has an empty version. */
  replace?: { path: string; version: string };
}

/** Parsed contents of the `.go.buildinfo` blob. */
export interface BuildInfo {
  /** Toolchain version as recorded, e.g. `go1.26.8`. */
  goVersion: string;
  /** Import path of the main package (`path` line), e.g. `example.com/cmd/server`. */
  mainPackage?: string;
  mainModule?: GoModule;
  modules: GoModule[];
  /** `build` lines: -buildmode, -ldflags, GOARCH, CGO_ENABLED, vcs.revision, … */
  settings: Record<string, string>;
}

/** `\xff Go buildinf:`, at the start of the blob; the blob is 16-byte aligned. */
const MAGIC = Buffer.from('\xff Go buildinf:', 'latin1');
const HEADER_SIZE = 32;
const ALIGN = 16;
/** Bit in the header's flags byte: version and module strings are inline (Go ≥ 1.18). */
const FLAG_INLINE = 2;
const FLAG_BIG_ENDIAN = 1;
/** Bounds for the strings; real module info of huge programs is tens of KiB. */
const MAX_VERSION_LEN = 1024;
const MAX_MODINFO_LEN = 16 << 20;
/**
 * How far into a writable segment to look when there are no section
 * headers. The blob leads the segment in Go-linked files, and follows the
 * C runtime's small data (tens of KiB) in externally linked ones.
 */
const SCAN_LIMIT = 4 << 20;
/** Module info is framed by 16-byte sentinels (cmd/go's infoStart/infoEnd). */
const SENTINEL_LEN = 16;

/**
 * Locates the build information blob: in the `.go.buildinfo` section, or,
 * for files without section headers, near the start of a writable segment,
 * where the linker puts it. Returns null when there is none: the file was
 * not built by the gc Go toolchain (or predates Go 1.13). The gc linker
 * always writes the section, so a file with section headers but without it
 * is answered without scanning — this is on process discovery's path for
 * every non-Go program. A `.go.buildinfo` section without the blob is
 * `CORRUPT`.
 */
export function readBuildInfoStrings(elf: ElfFile): { goVersion: string; modinfo: string } | null {
  const sec = elf.section('.go.buildinfo');
  let header: { off: number; buf: Buffer } | undefined;
  if (sec) {
    header = findHeader(elf, sec.offset, sec.offset + sec.size);
    if (!header) elf.file.fail('CORRUPT', `.go.buildinfo section (at ${hex(sec.offset)}) does not hold the build info magic`);
  } else if (elf.sections.length > 0) {
    return null;
  } else {
    for (const p of elf.programs) {
      if (p.type !== PT_LOAD || (p.flags & (PF_W | PF_X)) !== PF_W) continue;
      header = findHeader(elf, p.offset, p.offset + Math.min(p.filesz, SCAN_LIMIT));
      if (header) break;
    }
    if (!header) return null;
  }
  return decodeBlob(elf, header.off, header.buf);
}

/** Finds the 16-byte-aligned magic in the file range [start, end). */
function findHeader(elf: ElfFile, start: number, end: number): { off: number; buf: Buffer } | undefined {
  const chunk = 1 << 20;
  const reader = new WindowReader(elf.file, start, end, 'build info search', chunk + HEADER_SIZE);
  for (let base = 0; base < end - start; base += chunk) {
    const len = Math.min(chunk + HEADER_SIZE, end - start - base);
    const { buf, pos } = reader.bytes(base, len);
    const view = buf.subarray(pos, pos + len);
    for (let i = view.indexOf(MAGIC); i >= 0 && i < chunk; i = view.indexOf(MAGIC, i + 1)) {
      if ((start + base + i) % ALIGN === 0 && i + HEADER_SIZE <= view.length) {
        return { off: start + base + i, buf: Buffer.from(view.subarray(i, i + HEADER_SIZE)) };
      }
    }
  }
  return undefined;
}

function decodeBlob(elf: ElfFile, off: number, header: Buffer): { goVersion: string; modinfo: string } {
  const file = elf.file;
  const ptrSize = header[14]!;
  const flags = header[15]!;
  let goVersion: string;
  let modinfo: string;
  if ((flags & FLAG_INLINE) !== 0) {
    let pos = off + HEADER_SIZE;
    const v = readVarintString(elf, pos, MAX_VERSION_LEN, 'Go version');
    goVersion = v.value;
    pos = v.next;
    modinfo = readVarintString(elf, pos, MAX_MODINFO_LEN, 'module info').value;
  } else {
    // Go 1.13–1.17: two pointers to Go string headers, in the target's byte order.
    if ((flags & FLAG_BIG_ENDIAN) !== 0) file.fail('UNSUPPORTED_ARCH', 'build info is big-endian');
    if (ptrSize !== 8) file.fail('UNSUPPORTED_ARCH', `build info pointer size ${ptrSize} (amd64 only)`);
    goVersion = readStringAt(elf, file.u64(header, 16, 'build info version pointer'), MAX_VERSION_LEN, 'Go version');
    modinfo = readStringAt(elf, file.u64(header, 24, 'build info module pointer'), MAX_MODINFO_LEN, 'module info');
  }
  if (goVersion === '') file.fail('CORRUPT', 'build info has an empty Go version');
  if (modinfo.length >= 2 * SENTINEL_LEN + 1 && modinfo[modinfo.length - SENTINEL_LEN - 1] === '\n') {
    modinfo = modinfo.slice(SENTINEL_LEN, modinfo.length - SENTINEL_LEN);
  } else {
    modinfo = '';
  }
  return { goVersion, modinfo };
}

function readVarintString(elf: ElfFile, off: number, max: number, what: string): { value: string; next: number } {
  const head = elf.file.readUpTo(off, 10, `${what} length`);
  let len = 0;
  let i = 0;
  for (let shift = 1; ; shift *= 128, i++) {
    if (i >= head.length) elf.file.fail(i >= 10 ? 'CORRUPT' : 'TRUNCATED', `${what}: bad length varint at ${hex(off)}`);
    const b = head[i]!;
    len += (b & 0x7f) * shift;
    if ((b & 0x80) === 0) break;
  }
  if (len > max) elf.file.fail('CORRUPT', `${what}: absurd length ${len} at ${hex(off)}`);
  const start = off + i + 1;
  return { value: elf.file.read(start, len, what).toString('utf8'), next: start + len };
}

/** Reads a Go string header {data, len} at `vaddr` and then its bytes. */
function readStringAt(elf: ElfFile, vaddr: number, max: number, what: string): string {
  const hdr = elf.readAt(vaddr, 16, `${what} string header`);
  const data = elf.file.u64(hdr, 0, `${what} pointer`);
  const len = elf.file.u64(hdr, 8, `${what} length`);
  if (len > max) elf.file.fail('CORRUPT', `${what}: absurd length ${len}`);
  if (len === 0) return '';
  return elf.readAt(data, len, what).toString('utf8');
}

/**
 * Parses module info text (the format `runtime/debug.BuildInfo.String`
 * prints). Malformed lines are skipped rather than fatal: the module list
 * is informational, and a probe that needs a version fails on its own.
 */
export function parseModInfo(goVersion: string, modinfo: string): BuildInfo {
  const info: BuildInfo = { goVersion, modules: [], settings: {} };
  let last: GoModule | undefined;
  const lines = modinfo.split('\n');
  // The last element is unterminated: Go ignores it, and so do we.
  for (const line of lines.slice(0, -1)) {
    const tab = line.indexOf('\t');
    if (tab < 0) continue;
    const kind = line.slice(0, tab);
    const rest = line.slice(tab + 1);
    switch (kind) {
      case 'path':
        info.mainPackage = rest;
        break;
      case 'mod':
      case 'dep': {
        const elem = rest.split('\t');
        if (elem.length !== 2 && elem.length !== 3) {
          last = undefined;
          break;
        }
        const mod: GoModule = { path: elem[0]!, version: elem[1]! };
        if (elem[2]) mod.sum = elem[2];
        if (kind === 'mod') info.mainModule = mod;
        else info.modules.push(mod);
        last = mod;
        break;
      }
      case '=>': {
        const elem = rest.split('\t');
        if (elem.length === 3 && last) last.replace = { path: elem[0]!, version: elem[1]! };
        last = undefined;
        break;
      }
      case 'build': {
        const kv = parseSetting(rest);
        if (kv) info.settings[kv[0]] = kv[1];
        break;
      }
    }
  }
  return info;
}

function parseSetting(kv: string): [string, string] | undefined {
  let key: string;
  let raw: string;
  if (kv.startsWith('"') || kv.startsWith('`')) {
    const q = quotedPrefix(kv);
    if (q === undefined || kv[q.length] !== '=') return undefined;
    const k = unquote(q);
    if (k === undefined) return undefined;
    key = k;
    raw = kv.slice(q.length + 1);
  } else {
    const eq = kv.indexOf('=');
    if (eq <= 0) return undefined;
    key = kv.slice(0, eq);
    raw = kv.slice(eq + 1);
  }
  if (raw.startsWith('"') || raw.startsWith('`')) {
    const v = unquote(raw);
    if (v === undefined) return undefined;
    return [key, v];
  }
  return [key, raw];
}

/** The leading Go-quoted string of `s` (as strconv.QuotedPrefix). */
function quotedPrefix(s: string): string | undefined {
  const q = s[0];
  for (let i = 1; i < s.length; i++) {
    if (q === '"' && s[i] === '\\') {
      i++;
      continue;
    }
    if (s[i] === q) return s.slice(0, i + 1);
  }
  return undefined;
}

const SIMPLE_ESCAPES: Record<string, string> = {
  a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\', "'": "'", '"': '"',
};

/** Go's strconv.Unquote for "…" and `…` strings; undefined if malformed. */
export function unquote(s: string): string | undefined {
  if (s.length < 2) return undefined;
  const q = s[0];
  if (s[s.length - 1] !== q) return undefined;
  const body = s.slice(1, -1);
  if (q === '`') return body.includes('`') ? undefined : body.replace(/\r/g, '');
  if (q !== '"') return undefined;
  const bytes: number[] = [];
  const pushText = (t: string): void => {
    for (const b of Buffer.from(t, 'utf8')) bytes.push(b);
  };
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === '"' || c === '\n') return undefined;
    if (c !== '\\') {
      const cp = body.codePointAt(i)!;
      pushText(String.fromCodePoint(cp));
      if (cp > 0xffff) i++;
      continue;
    }
    const e = body[++i];
    if (e === undefined) return undefined;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      pushText(simple);
    } else if (e === 'x' || e === 'u' || e === 'U') {
      const n = e === 'x' ? 2 : e === 'u' ? 4 : 8;
      const digits = body.slice(i + 1, i + 1 + n);
      if (!/^[0-9a-fA-F]+$/.test(digits) || digits.length !== n) return undefined;
      const v = parseInt(digits, 16);
      if (e === 'x') bytes.push(v);
      else if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) return undefined;
      else pushText(String.fromCodePoint(v));
      i += n;
    } else if (e >= '0' && e <= '7') {
      const digits = body.slice(i, i + 3);
      if (!/^[0-7]{3}$/.test(digits)) return undefined;
      const v = parseInt(digits, 8);
      if (v > 255) return undefined;
      bytes.push(v);
      i += 2;
    } else {
      return undefined;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
