import { WindowReader } from './binary-file.ts';
import type { BinaryFile } from './binary-file.ts';
import { PF_W, PF_X } from './elf.ts';
import type { ElfFile } from './elf.ts';
import { GoBinaryError, hex } from './errors.ts';

/**
 * Layout generation of the pclntab, named after the Go release that
 * introduced it: 1.2 (magic 0xfffffffb, Go 1.2–1.15), 1.16 (0xfffffffa),
 * 1.18 (0xfffffff0, Go 1.18–1.19) and 1.20 (0xfffffff1, Go 1.20 onwards).
 */
export type PclntabVersion = '1.2' | '1.16' | '1.18' | '1.20';

const MAGICS: ReadonlyMap<number, PclntabVersion> = new Map([
  [0xfffffffb, '1.2'],
  [0xfffffffa, '1.16'],
  [0xfffffff0, '1.18'],
  [0xfffffff1, '1.20'],
]);

/** Byte offset of moduledata.text (after pcHeader, six slices, findfunctab, minpc, maxpc); the same since Go 1.16. */
const MODULEDATA_TEXT = 8 + 6 * 24 + 3 * 8;
/** Largest header any version has. */
const HEADER_SIZE = 72;

/** A located and validated pclntab header. */
export interface Pclntab {
  version: PclntabVersion;
  /** File offset of the header. */
  offset: number;
  /** Virtual address of the header. */
  vaddr: number;
  /** Bytes from the header to the end of the region holding it: an upper bound on the table's size. */
  limit: number;
  /** Where it was found, for diagnostics: a section name, a symbol or a scan. */
  foundIn: string;
  nfunc: number;
  /** Address the function table's entry offsets are relative to (1.18+), else 0. */
  textStart: number;
  /** Offset from the header of the function-name table (the whole table for 1.2). */
  funcnameOffset: number;
  /** Size bound of the function-name table. */
  funcnameSize: number;
  /** Offset from the header of the function table (functab followed by the _func records). */
  pclnOffset: number;
}

/** Optional symbol lookup from .symtab; absent in stripped binaries. */
export type SymbolLookup = (name: string) => number | undefined;

/**
 * Finds the pclntab. Where it lives (measured with the toolchains here):
 *
 * - `.gopclntab` section: every build of Go 1.26 and 1.27 (PIE and external
 *   linking included), and Go 1.19 non-PIE builds;
 * - `.data.rel.ro.gopclntab`: Go 1.19 internally linked PIE;
 * - inside `.data.rel.ro`, merged by the system linker: Go 1.19 externally
 *   linked PIE — found through the `runtime.pclntab` symbol, or, stripped,
 *   only by scanning.
 *
 * So: sections named `*.gopclntab`, then the `runtime.pclntab` symbol, then
 * the pointer in the module data (`runtime.firstmoduledata`, or the
 * `.go.module` section of Go 1.26+), then a scan of the loadable segments
 * for a header that validates (the way for files without section headers).
 * Throws `CORRUPT` if none is found.
 */
export function findPclntab(elf: ElfFile, symbol: SymbolLookup): Pclntab {
  const errors: string[] = [];
  const attempt = (offset: number, limit: number, foundIn: string): Pclntab | undefined => {
    try {
      return parseHeader(elf, offset, limit, foundIn, symbol);
    } catch (err) {
      if (err instanceof GoBinaryError && (err.code === 'CORRUPT' || err.code === 'TRUNCATED')) {
        errors.push(err.detail);
        return undefined;
      }
      throw err;
    }
  };
  for (const sec of elf.sections) {
    if (sec.name !== '.gopclntab' && !sec.name.endsWith('.gopclntab')) continue;
    const t = attempt(sec.offset, sec.size, `section ${sec.name}`);
    if (t) return t;
  }
  const start = symbol('runtime.pclntab');
  if (start !== undefined) {
    const end = symbol('runtime.epclntab');
    const off = elf.tryFileOffset(start);
    if (off !== undefined) {
      const seg = elf.loads().find((p) => start >= p.vaddr && start < p.vaddr + p.filesz)!;
      const limit = end !== undefined && end > start ? end - start : seg.vaddr + seg.filesz - start;
      const t = attempt(off, limit, 'symbol runtime.pclntab');
      if (t) return t;
    }
  }
  // The module data's first word points at the pclntab header.
  for (const md of moduledataCandidates(elf, symbol)) {
    const header = readPointer(elf, md);
    const off = header === undefined ? undefined : elf.tryFileOffset(header, 8);
    if (header === undefined || off === undefined) continue;
    const seg = elf.loads().find((p) => header >= p.vaddr && header < p.vaddr + p.filesz)!;
    const t = attempt(off, seg.vaddr + seg.filesz - header, 'module data');
    if (t) return t;
  }
  // Read-only data first: that is where every linker we know puts it.
  const segs = [...elf.loads()].sort((a, b) => rank(a.flags) - rank(b.flags));
  for (const seg of segs) {
    const t = scanSegment(elf, seg.offset, seg.filesz, (off, limit) => attempt(off, limit, `scan of segment at ${hex(seg.vaddr)}`));
    if (t) return t;
  }
  const detail = errors.length > 0 ? `: ${errors.slice(0, 3).join('; ')}` : '';
  elf.file.fail('CORRUPT', `no valid pclntab found${detail}`);
}

function rank(flags: number): number {
  if ((flags & (PF_W | PF_X)) === 0) return 0;
  if ((flags & PF_X) === 0) return 1;
  return 2;
}

const PATTERN_TAIL = Buffer.from([0, 0, 1, 8]);

function scanSegment(elf: ElfFile, start: number, size: number, tryAt: (off: number, limit: number) => Pclntab | undefined): Pclntab | undefined {
  const chunk = 1 << 20;
  const reader = new WindowReader(elf.file, start, start + size, 'pclntab search', chunk + 8);
  for (let base = 0; base < size; base += chunk) {
    const len = Math.min(chunk + 8, size - base);
    const { buf, pos } = reader.bytes(base, len);
    // tryAt reads through the file, not this reader, so the view stays valid.
    const view = buf.subarray(pos, pos + len);
    // Search for the 4 fixed bytes after the magic, then look back at it.
    for (let i = view.indexOf(PATTERN_TAIL, 4); i >= 4 && i - 4 < chunk; i = view.indexOf(PATTERN_TAIL, i + 1)) {
      const at = i - 4;
      if (!MAGICS.has(view.readUInt32LE(at))) continue;
      const t = tryAt(start + base + at, size - base - at);
      if (t) return t;
    }
  }
  return undefined;
}

function parseHeader(elf: ElfFile, offset: number, limit: number, foundIn: string, symbol: SymbolLookup): Pclntab {
  const file: BinaryFile = elf.file;
  const where = `pclntab (${foundIn})`;
  const h = file.read(offset, Math.min(HEADER_SIZE, limit), `${where} header`);
  if (h.length < 16) file.fail('CORRUPT', `${where}: too small (${limit} bytes)`);
  const version = MAGICS.get(h.readUInt32LE(0));
  if (!version) file.fail('CORRUPT', `${where}: unknown magic ${hex(h.readUInt32LE(0))}`);
  if (h[4] !== 0 || h[5] !== 0 || h[6] !== 1 || h[7] !== 8) {
    file.fail('CORRUPT', `${where}: header pad/quantum/ptrsize ${h[4]}/${h[5]}/${h[6]}/${h[7]}, expected 0/0/1/8`);
  }
  const word = (i: number): number => {
    if (8 + i * 8 + 8 > h.length) file.fail('CORRUPT', `${where}: header cut short`);
    return file.u64(h, 8 + i * 8, `${where} header`);
  };
  const vaddr = vaddrOf(elf, offset);
  if (vaddr === undefined) file.fail('CORRUPT', `${where}: not in a loadable segment`);
  const nfunc = word(0);
  let t: Pclntab;
  if (version === '1.2') {
    // Function table right after the header; names anywhere in the table.
    t = { version, offset, vaddr, limit, foundIn, nfunc, textStart: 0, funcnameOffset: 0, funcnameSize: limit, pclnOffset: 16 };
  } else {
    const base = version === '1.16' ? 2 : 3;
    const funcnameOffset = word(base);
    const cuOffset = word(base + 1);
    const filetabOffset = word(base + 2);
    const pctabOffset = word(base + 3);
    const pclnOffset = word(base + 4);
    const order = [HEADER_SIZE - (version === '1.16' ? 8 : 0), funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset, limit];
    for (let i = 1; i < order.length; i++) {
      if (order[i]! < order[i - 1]!) file.fail('CORRUPT', `${where}: table offsets out of order or beyond the table (${order.slice(1, -1).map(hex).join(', ')}, size ${hex(limit)})`);
    }
    t = { version, offset, vaddr, limit, foundIn, nfunc, textStart: 0, funcnameOffset, funcnameSize: cuOffset - funcnameOffset, pclnOffset };
  }
  const entrySize = ftabEntrySize(version);
  if (nfunc === 0 || nfunc > (limit - t.pclnOffset) / entrySize - 1) {
    file.fail('CORRUPT', `${where}: function count ${nfunc} does not fit the table (${limit} bytes)`);
  }
  if (version === '1.18' || version === '1.20') t.textStart = findTextStart(elf, t, word(2), symbol);
  checkEnds(elf, t);
  return t;
}

function ftabEntrySize(v: PclntabVersion): number {
  return v === '1.18' || v === '1.20' ? 8 : 16;
}

/** Checks that the first function and the table's end lie in one executable segment. */
function checkEnds(elf: ElfFile, t: Pclntab): void {
  const entrySize = ftabEntrySize(t.version);
  const buf = elf.file.read(t.offset + t.pclnOffset, entrySize, 'pclntab function table');
  const last = elf.file.read(t.offset + t.pclnOffset + t.nfunc * entrySize, entrySize / 2, 'pclntab function table end');
  const first = entrySize === 8 ? t.textStart + buf.readUInt32LE(0) : elf.file.u64(buf, 0, 'pclntab entry');
  const end = entrySize === 8 ? t.textStart + last.readUInt32LE(0) : elf.file.u64(last, 0, 'pclntab end');
  const seg = elf.execSegmentAt(first);
  if (!seg || end <= first || end > seg.vaddr + seg.filesz) {
    elf.file.fail('CORRUPT', `pclntab (${t.foundIn}): functions ${hex(first)}–${hex(end)} are not within one executable segment`);
  }
}

/**
 * The address 1.18+ entry offsets are relative to: `runtime.text`. The
 * header field holding it is only filled in by Go 1.18–1.25 (and is
 * unrelocated in some PIE builds), so prefer the symbol, then the header,
 * then the `text` field of the module data that points at this header,
 * and last the `.text` section (right for internal linking only).
 */
function findTextStart(elf: ElfFile, t: Pclntab, headerValue: number, symbol: SymbolLookup): number {
  const fits = (v: number | undefined): v is number => {
    if (v === undefined || v === 0) return false;
    const buf = elf.file.read(t.offset + t.pclnOffset, 4, 'pclntab function table');
    return elf.execSegmentAt(v + buf.readUInt32LE(0)) !== undefined;
  };
  const sym = symbol('runtime.text');
  if (fits(sym)) return sym;
  if (fits(headerValue)) return headerValue;
  const md = moduledataText(elf, t, symbol);
  if (fits(md)) return md;
  const text = elf.section('.text');
  if (text && fits(text.addr)) return text.addr;
  elf.file.fail('CORRUPT', `pclntab (${t.foundIn}): cannot determine the start of the Go text`);
}

/** Addresses where runtime.firstmoduledata may be: its symbol, or the `.go.module` section of Go 1.26+. */
function moduledataCandidates(elf: ElfFile, symbol: SymbolLookup): number[] {
  const candidates: number[] = [];
  const sym = symbol('runtime.firstmoduledata');
  if (sym !== undefined) candidates.push(sym);
  const sec = elf.section('.go.module');
  if (sec) candidates.push(sec.addr);
  return candidates;
}

/** The pointer stored at `vaddr`, from the file or, if zero there, from its relocation. */
function readPointer(elf: ElfFile, vaddr: number): number | undefined {
  const off = elf.tryFileOffset(vaddr, 8);
  if (off === undefined) return undefined;
  const v = Number(elf.file.read(off, 8, 'pointer').readBigUInt64LE(0));
  return v !== 0 ? v : elf.relativeRelocationAt(vaddr);
}

function moduledataText(elf: ElfFile, t: Pclntab, symbol: SymbolLookup): number | undefined {
  const md = findModuledata(elf, t, symbol);
  return md === undefined ? undefined : readModuledataText(elf, t, md);
}

/**
 * Address of the module data (`runtime.firstmoduledata`) whose first two
 * words point at this pclntab's header and function-name table: from the
 * symbol or the `.go.module` section (Go 1.26+), else by searching writable
 * data for a pointer to the header (or, where the linker left it zero on
 * disk, a relocation to it). Undefined if none is found.
 */
export function findModuledata(elf: ElfFile, t: Pclntab, symbol: SymbolLookup): number | undefined {
  for (const md of moduledataCandidates(elf, symbol)) {
    if (readModuledataText(elf, t, md) !== undefined) return md;
  }
  // Stripped and no .go.module: find the pointer to our header in writable data.
  const want = Buffer.alloc(8);
  want.writeBigUInt64LE(BigInt(t.vaddr));
  for (const seg of elf.loads()) {
    if ((seg.flags & PF_W) === 0) continue;
    const chunk = 1 << 20;
    const reader = new WindowReader(elf.file, seg.offset, seg.offset + seg.filesz, 'module data search', chunk);
    for (let base = 0; base < seg.filesz; base += chunk) {
      const len = Math.min(chunk, seg.filesz - base);
      const { buf, pos } = reader.bytes(base, len);
      const view = buf.subarray(pos, pos + len);
      for (let i = view.indexOf(want); i >= 0; i = view.indexOf(want, i + 1)) {
        if ((seg.vaddr + base + i) % 8 !== 0) continue;
        if (readModuledataText(elf, t, seg.vaddr + base + i) !== undefined) return seg.vaddr + base + i;
      }
    }
  }
  // Linkers that leave relocated words zero on disk (lld) still name them in relocations.
  for (const md of elf.relativeRelocationsTo(t.vaddr)) {
    if (readModuledataText(elf, t, md) !== undefined) return md;
  }
  return undefined;
}

/** moduledata.text at `md`, if `md` really is the module data of this pclntab. */
function readModuledataText(elf: ElfFile, t: Pclntab, md: number): number | undefined {
  const off = elf.tryFileOffset(md, MODULEDATA_TEXT + 8);
  if (off === undefined) return undefined;
  const buf = elf.file.read(off, MODULEDATA_TEXT + 8, 'module data');
  const ptr = (pos: number): number => {
    const v = Number(buf.readBigUInt64LE(pos));
    return v !== 0 ? v : elf.relativeRelocationAt(md + pos) ?? 0;
  };
  if (ptr(0) !== t.vaddr || ptr(8) !== t.vaddr + t.funcnameOffset) return undefined;
  return ptr(MODULEDATA_TEXT);
}

function vaddrOf(elf: ElfFile, offset: number): number | undefined {
  for (const p of elf.loads()) {
    if (offset >= p.offset && offset < p.offset + p.filesz) return p.vaddr + (offset - p.offset);
  }
  return undefined;
}

/**
 * Calls `fn` for every function of the table in address order, with its
 * name (a view valid only during the call), entry, end (the next
 * function's entry, so it includes alignment padding) and the file offset
 * of its NUL-terminated name. Validates as it goes: entries must ascend,
 * each _func record must agree with the function table, names must lie
 * in the name table.
 */
export function forEachPclnFunction(
  elf: ElfFile,
  t: Pclntab,
  fn: (name: Buffer, entry: number, end: number, nameFileOffset: number) => void,
): void {
  const file: BinaryFile = elf.file;
  const where = `pclntab (${t.foundIn})`;
  const wide = ftabEntrySize(t.version) === 16;
  const entrySize = ftabEntrySize(t.version);
  const ftabStart = t.offset + t.pclnOffset;
  const ftab = new WindowReader(file, ftabStart, t.offset + t.limit, `${where} function table`);
  const funcs = new WindowReader(file, ftabStart, t.offset + t.limit, `${where} function records`);
  // 1.2 name offsets are relative to the table start; later ones to the name table.
  const nameBase = t.offset + t.funcnameOffset;
  const names = new WindowReader(file, nameBase, nameBase + t.funcnameSize, `${where} function names`);
  const entryAt = (i: number): { entry: number; funcoff: number } => {
    const { buf, pos } = ftab.bytes(i * entrySize, entrySize);
    if (wide) return { entry: file.u64(buf, pos, where), funcoff: file.u64(buf, pos + 8, where) };
    return { entry: t.textStart + buf.readUInt32LE(pos), funcoff: buf.readUInt32LE(pos + 4) };
  };
  let cur = entryAt(0);
  for (let i = 0; i < t.nfunc; i++) {
    const next = i + 1 < t.nfunc ? entryAt(i + 1) : { entry: endAt(i + 1), funcoff: 0 };
    if (next.entry < cur.entry) file.fail('CORRUPT', `${where}: function ${i + 1} at ${hex(next.entry)} precedes function ${i} at ${hex(cur.entry)}`);
    const recSize = wide ? 12 : 8;
    // funcoff is relative to the function table (1.16+) or the whole table (1.2).
    const recOff = t.version === '1.2' ? cur.funcoff - t.pclnOffset : cur.funcoff;
    const { buf, pos } = funcs.bytes(recOff, recSize);
    const recEntry = wide ? file.u64(buf, pos, where) : t.textStart + buf.readUInt32LE(pos);
    if (recEntry !== cur.entry) file.fail('CORRUPT', `${where}: function ${i} record says entry ${hex(recEntry)}, table says ${hex(cur.entry)}`);
    const nameOff = buf.readInt32LE(pos + (wide ? 8 : 4));
    const name = names.cstring(nameOff, 1 << 20);
    fn(name, cur.entry, next.entry, nameBase + nameOff);
    cur = next;
  }

  function endAt(i: number): number {
    const { buf, pos } = ftab.bytes(i * entrySize, entrySize / 2);
    return wide ? file.u64(buf, pos, where) : t.textStart + buf.readUInt32LE(pos);
  }
}
