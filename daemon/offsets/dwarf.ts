/**
 * A small DWARF reader: struct member offsets by qualified struct name, which
 * is all the probes need from a binary's debug info. It decodes DWARF 2–5 as
 * emitted by Go 1.19–1.27 (and by C compilers, for cgo units it walks past),
 * and is written for hostile input: every read is bounds-checked, every loop
 * consumes input or is bounded, and anything malformed raises a
 * {@link DwarfError} naming the section and offset.
 *
 * Speed comes from decoding as little as possible: units whose language is not
 * Go are skipped whole, DIEs whose attributes all have fixed-size forms are
 * skipped by a precomputed size, subtrees are skipped through DW_AT_sibling
 * when the producer emits it, and the walk stops once every wanted struct has
 * been read.
 */
import { BinaryFile } from '../analysis/binary-file.ts';
import { ElfFile, SHT_NOBITS, type SectionHeader } from '../analysis/elf.ts';
import { GoBinaryError } from '../analysis/errors.ts';
import { DwarfError } from './errors.ts';

export { DwarfError } from './errors.ts';

/** The decompressed DWARF sections a lookup needs. */
export interface DwarfSections {
  /** `.debug_info`. */
  info: Buffer;
  /** `.debug_abbrev`. */
  abbrev: Buffer;
  /** `.debug_str`, for DW_FORM_strp / DW_FORM_strx names. Go inlines names and emits none. */
  str?: Buffer;
  /** `.debug_line_str` (DWARF 5, DW_FORM_line_strp). */
  lineStr?: Buffer;
  /** `.debug_str_offsets` (DWARF 5, DW_FORM_strx*). */
  strOffsets?: Buffer;
  /** Byte order of the target. Default: little-endian (amd64, arm64). */
  bigEndian?: boolean;
}

/**
 * The DWARF sections of an ELF file already parsed (by the binary analysis:
 * one open and one parse per binary), decompressed: plain `.debug_*`,
 * SHF_COMPRESSED `.debug_*` (zlib, zstd) and legacy `.zdebug_*` sections.
 *
 * @returns `null` when there is no `.debug_info`/`.debug_abbrev` (a stripped
 *   binary), an expected case, not an error.
 * @throws DwarfError naming the section when one is truncated or its
 *   compression is malformed.
 */
export function dwarfSectionsOf(elf: ElfFile): DwarfSections | null {
  const byName = new Map<string, SectionHeader>();
  for (const sh of elf.sections) {
    if (sh.type === SHT_NOBITS) continue; // a separate-debug-file stub carries no data
    if (!byName.has(sh.name)) byName.set(sh.name, sh);
  }
  const find = (suffix: string): Buffer | undefined => {
    const sh = byName.get(`.debug_${suffix}`) ?? byName.get(`.zdebug_${suffix}`);
    if (sh === undefined) return undefined;
    try {
      return elf.sectionData(sh);
    } catch (err) {
      throw asDwarfError(err, sh.name);
    }
  };
  const info = find('info');
  const abbrev = find('abbrev');
  if (info === undefined || abbrev === undefined) return null;
  const out: DwarfSections = { info, abbrev };
  const str = find('str');
  const lineStr = find('line_str');
  const strOffsets = find('str_offsets');
  if (str !== undefined) out.str = str;
  if (lineStr !== undefined) out.lineStr = lineStr;
  if (strOffsets !== undefined) out.strOffsets = strOffsets;
  return out;
}

/**
 * Reads the DWARF sections of the ELF file at `path`, decompressed. Only the
 * headers and the wanted sections are read from disk. The agent takes them
 * from the analysed binary instead ({@link dwarfSectionsOf}); this is for
 * tools and tests that have a path only.
 *
 * @returns `null` for a binary without DWARF.
 * @throws DwarfError for malformed (or not 64-bit little-endian) ELF or
 *   section data; the usual fs errors (ENOENT, EACCES) for unreadable files.
 */
export function loadDwarfSections(path: string): DwarfSections | null {
  let file: BinaryFile;
  try {
    file = BinaryFile.open(path);
  } catch (err) {
    // keep the fs error (its code) for callers telling "missing" from "malformed"
    if (err instanceof GoBinaryError && err.cause instanceof Error) throw err.cause;
    throw err;
  }
  return withElf(file, dwarfSectionsOf);
}

/** {@link loadDwarfSections} over an in-memory ELF image. */
export function dwarfSectionsFromImage(image: Buffer): DwarfSections | null {
  return withElf(BinaryFile.fromImage('ELF image', image), dwarfSectionsOf);
}

/** Section headers of an in-memory ELF image (for diagnostics and tests); throws DwarfError when malformed. */
export function elfSectionHeaders(image: Buffer): readonly SectionHeader[] {
  return withElf(BinaryFile.fromImage('ELF image', image), (elf) => elf.sections);
}

function withElf<T>(file: BinaryFile, fn: (elf: ElfFile) => T): T {
  let elf: ElfFile;
  try {
    elf = ElfFile.parse(file);
  } catch (err) {
    throw asDwarfError(err, 'ELF headers');
  }
  try {
    return fn(elf);
  } catch (err) {
    throw asDwarfError(err, 'ELF file');
  } finally {
    elf.close();
  }
}

/** The ELF reader's errors, as the DWARF reader's callers expect them. */
function asDwarfError(err: unknown, section: string): unknown {
  if (err instanceof GoBinaryError) return new DwarfError(section, 0, err.detail, { cause: err });
  return err;
}

/** Detailed outcome of {@link readStructFields}. */
export interface StructFieldsResult {
  /** Offsets of the wanted fields that were found. */
  offsets: Map<string, number>;
  /** Wanted fields whose struct was found without such a member: the field does not exist in this binary. */
  absent: string[];
  /** Wanted fields whose struct is not in the DWARF (the linker dropped the type, or it never existed). */
  structNotFound: string[];
}

// Tags, attributes and forms used below (DWARF 5, section 7).
const TAG_STRUCTURE_TYPE = 0x13;
const TAG_MEMBER = 0x0d;
const AT_SIBLING = 0x01;
const AT_NAME = 0x03;
const AT_LANGUAGE = 0x13;
const AT_DATA_MEMBER_LOCATION = 0x38;
const AT_STR_OFFSETS_BASE = 0x72;
const LANG_GO = 0x16;
const OP_PLUS_UCONST = 0x23;

const FORM = {
  addr: 0x01, block2: 0x03, block4: 0x04, data2: 0x05, data4: 0x06, data8: 0x07, string: 0x08,
  block: 0x09, block1: 0x0a, data1: 0x0b, flag: 0x0c, sdata: 0x0d, strp: 0x0e, udata: 0x0f,
  ref_addr: 0x10, ref1: 0x11, ref2: 0x12, ref4: 0x13, ref8: 0x14, ref_udata: 0x15, indirect: 0x16,
  sec_offset: 0x17, exprloc: 0x18, flag_present: 0x19, strx: 0x1a, addrx: 0x1b, ref_sup4: 0x1c,
  strp_sup: 0x1d, data16: 0x1e, line_strp: 0x1f, ref_sig8: 0x20, implicit_const: 0x21,
  loclistx: 0x22, rnglistx: 0x23, ref_sup8: 0x24, strx1: 0x25, strx2: 0x26, strx3: 0x27,
  strx4: 0x28, addrx1: 0x29, addrx2: 0x2a, addrx3: 0x2b, addrx4: 0x2c,
  gnu_addr_index: 0x1f01, gnu_str_index: 0x1f02, gnu_ref_alt: 0x1f20, gnu_strp_alt: 0x1f21,
} as const;

/**
 * Deeper nesting than this is not produced by any compiler we read; on
 * corrupt input it stops a runaway walk early with a clear error.
 */
const MAX_DEPTH = 256;

/** Bounds-checked reader over one section (optionally narrowed to a unit). */
class Cursor {
  readonly buf: Buffer;
  readonly section: string;
  readonly be: boolean;
  pos = 0;
  end: number;

  constructor(buf: Buffer, section: string, bigEndian: boolean) {
    this.buf = buf;
    this.section = section;
    this.be = bigEndian;
    this.end = buf.length;
  }

  fail(message: string, at: number = this.pos): never {
    throw new DwarfError(this.section, at, message);
  }

  skip(n: number): void {
    if (!(n >= 0) || n > this.end - this.pos) this.fail(`length ${n} runs past the end (${this.end - this.pos} bytes left)`);
    this.pos += n;
  }

  u8(): number {
    if (this.pos >= this.end) this.fail('truncated (1-byte field)');
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const v = this.be ? this.buf.readUInt16BE(this.pos) : this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u24(): number {
    this.need(3);
    const b = this.buf;
    const p = this.pos;
    this.pos += 3;
    return this.be ? (b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]! : b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16);
  }

  u32(): number {
    this.need(4);
    const v = this.be ? this.buf.readUInt32BE(this.pos) : this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const at = this.pos;
    const v = this.be ? this.buf.readBigUInt64BE(at) : this.buf.readBigUInt64LE(at);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`64-bit value ${v} out of range`, at);
    return Number(v);
  }

  offset(size: number): number {
    return size === 8 ? this.u64() : this.u32();
  }

  /** ULEB128 that must fit a JS safe integer (lengths, codes, offsets). */
  uleb(): number {
    const start = this.pos;
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) break;
      mul *= 128;
      if (mul > 2 ** 56) this.fail('ULEB128 value too large', start);
    }
    if (result > Number.MAX_SAFE_INTEGER) this.fail('ULEB128 value too large', start);
    return result;
  }

  sleb(): number {
    const start = this.pos;
    let result = 0;
    let mul = 1;
    let b: number;
    do {
      b = this.u8();
      result += (b & 0x7f) * mul;
      mul *= 128;
      if (mul > 2 ** 63 && (b & 0x80) !== 0) this.fail('SLEB128 value too large', start);
    } while ((b & 0x80) !== 0);
    if ((b & 0x40) !== 0) result -= mul;
    return result;
  }

  /** Skips a LEB128 of any length (constants may be wider than 53 bits). */
  skipLeb(): void {
    while ((this.u8() & 0x80) !== 0) {
      // each iteration consumes a byte, so the section end bounds the loop
    }
  }

  cstring(): string {
    const start = this.pos;
    const nul = this.buf.indexOf(0, start);
    if (nul < 0 || nul >= this.end) this.fail('unterminated string', start);
    this.pos = nul + 1;
    return this.buf.toString('utf8', start, nul);
  }

  private need(n: number): void {
    if (n > this.end - this.pos) this.fail(`truncated (${n}-byte field, ${this.end - this.pos} bytes left)`);
  }
}

interface Abbrev {
  tag: number;
  children: boolean;
  /** Attribute/form pairs, flattened. */
  specs: number[];
  /** DW_FORM_implicit_const values, by attribute index. */
  implicit: Map<number, number>;
  hasSibling: boolean;
  /** Total size of the attribute values when every form is fixed-size, else -1. Per unit format. */
  fixedSize: number;
}

interface Unit {
  start: number;
  end: number;
  version: number;
  offSize: number;
  addrSize: number;
  strOffsetsBase: number | undefined;
}

function parseAbbrevTable(sec: Buffer, offset: number, be: boolean): Map<number, Abbrev> {
  const c = new Cursor(sec, '.debug_abbrev', be);
  if (offset >= sec.length) c.fail(`abbreviation table offset 0x${offset.toString(16)} is past the end (${sec.length} bytes)`, 0);
  c.pos = offset;
  const table = new Map<number, Abbrev>();
  // Each pass consumes at least one byte; the section end bounds the loop.
  for (;;) {
    const at = c.pos;
    if (c.pos >= c.end) break; // lenient: some producers omit the final 0
    const code = c.uleb();
    if (code === 0) break;
    const tag = c.uleb();
    const children = c.u8();
    if (children > 1) c.fail(`abbreviation ${code}: bad children flag ${children}`, c.pos - 1);
    const specs: number[] = [];
    const implicit = new Map<number, number>();
    let hasSibling = false;
    for (;;) {
      const attr = c.uleb();
      const form = c.uleb();
      if (attr === 0 && form === 0) break;
      if (attr === 0 || form === 0) c.fail(`abbreviation ${code}: attribute ${attr} with form ${form}`);
      if (form === FORM.implicit_const) implicit.set(specs.length / 2, c.sleb());
      if (attr === AT_SIBLING) hasSibling = true;
      specs.push(attr, form);
    }
    if (table.has(code)) c.fail(`duplicate abbreviation code ${code}`, at);
    table.set(code, { tag, children: children === 1, specs, implicit, hasSibling, fixedSize: -1 });
  }
  return table;
}

/** Size of a form's value when it does not depend on the data, else -1. */
function fixedFormSize(form: number, u: Unit): number {
  switch (form) {
    case FORM.addr: return u.addrSize;
    case FORM.data1: case FORM.ref1: case FORM.flag: case FORM.strx1: case FORM.addrx1: return 1;
    case FORM.data2: case FORM.ref2: case FORM.strx2: case FORM.addrx2: return 2;
    case FORM.strx3: case FORM.addrx3: return 3;
    case FORM.data4: case FORM.ref4: case FORM.ref_sup4: case FORM.strx4: case FORM.addrx4: return 4;
    case FORM.data8: case FORM.ref8: case FORM.ref_sig8: case FORM.ref_sup8: return 8;
    case FORM.data16: return 16;
    case FORM.flag_present: case FORM.implicit_const: return 0;
    case FORM.strp: case FORM.sec_offset: case FORM.line_strp: case FORM.strp_sup:
    case FORM.gnu_ref_alt: case FORM.gnu_strp_alt:
      return u.offSize;
    case FORM.ref_addr: return u.version <= 2 ? u.addrSize : u.offSize;
    default: return -1;
  }
}

function skipForm(c: Cursor, form: number, u: Unit, nested = false): void {
  const fixed = fixedFormSize(form, u);
  if (fixed >= 0) {
    c.skip(fixed);
    return;
  }
  switch (form) {
    case FORM.string: {
      const nul = c.buf.indexOf(0, c.pos);
      if (nul < 0 || nul >= c.end) c.fail('unterminated string');
      c.pos = nul + 1;
      return;
    }
    case FORM.sdata: case FORM.udata: case FORM.ref_udata: case FORM.strx: case FORM.addrx:
    case FORM.loclistx: case FORM.rnglistx: case FORM.gnu_addr_index: case FORM.gnu_str_index:
      c.skipLeb();
      return;
    case FORM.block1: c.skip(c.u8()); return;
    case FORM.block2: c.skip(c.u16()); return;
    case FORM.block4: c.skip(c.u32()); return;
    case FORM.block: case FORM.exprloc: c.skip(c.uleb()); return;
    case FORM.indirect: {
      const at = c.pos;
      const real = c.uleb();
      if (nested || real === FORM.indirect) c.fail('DW_FORM_indirect pointing to DW_FORM_indirect', at);
      skipForm(c, real, u, true);
      return;
    }
    default:
      c.fail(`unknown attribute form 0x${form.toString(16)}`);
  }
}

/** Reads a constant-class value (offsets, languages, sibling references). */
function readConstant(c: Cursor, form: number, implicitValue: number | undefined): number {
  switch (form) {
    case FORM.data1: case FORM.ref1: case FORM.flag: return c.u8();
    case FORM.data2: case FORM.ref2: return c.u16();
    case FORM.data4: case FORM.ref4: return c.u32();
    case FORM.data8: case FORM.ref8: return c.u64();
    case FORM.udata: case FORM.ref_udata: return c.uleb();
    case FORM.sdata: return c.sleb();
    case FORM.implicit_const: return implicitValue ?? 0;
    default: return c.fail(`form 0x${form.toString(16)} is not a constant`);
  }
}

class Reader {
  private readonly s: DwarfSections;
  private readonly be: boolean;
  private readonly info: Cursor;
  private readonly tables = new Map<number, Map<number, Abbrev>>();
  private readonly sized = new Map<string, Map<number, Abbrev>>();

  constructor(s: DwarfSections) {
    this.s = s;
    this.be = s.bigEndian === true;
    this.info = new Cursor(s.info, '.debug_info', this.be);
  }

  /** Abbreviation table for a unit, with fixed sizes computed for its format. */
  private abbrevs(offset: number, u: Unit): Map<number, Abbrev> {
    const key = `${offset}/${u.version}/${u.offSize}/${u.addrSize}`;
    const hit = this.sized.get(key);
    if (hit !== undefined) return hit;
    let base = this.tables.get(offset);
    if (base === undefined) {
      base = parseAbbrevTable(this.s.abbrev, offset, this.be);
      this.tables.set(offset, base);
    }
    const table = new Map<number, Abbrev>();
    for (const [code, a] of base) {
      let size = 0;
      for (let i = 1; i < a.specs.length && size >= 0; i += 2) {
        const f = fixedFormSize(a.specs[i]!, u);
        size = f < 0 ? -1 : size + f;
      }
      table.set(code, { ...a, fixedSize: size });
    }
    this.sized.set(key, table);
    return table;
  }

  private stringAt(sec: Buffer | undefined, name: string, off: number, at: number): string {
    if (sec === undefined) this.info.fail(`string form refers to ${name}, which is missing`, at);
    const c = new Cursor(sec, name, this.be);
    if (off >= sec.length) c.fail(`string offset 0x${off.toString(16)} past the end (${sec.length} bytes)`, off);
    c.pos = off;
    return c.cstring();
  }

  /** Reads a string-class value; `undefined` for forms we cannot resolve (supplementary files). */
  private readString(form: number, u: Unit): string | undefined {
    const c = this.info;
    const at = c.pos;
    switch (form) {
      case FORM.string: return c.cstring();
      case FORM.strp: return this.stringAt(this.s.str, '.debug_str', c.offset(u.offSize), at);
      case FORM.line_strp: return this.stringAt(this.s.lineStr, '.debug_line_str', c.offset(u.offSize), at);
      case FORM.strx: case FORM.gnu_str_index: return this.indexedString(c.uleb(), u, at);
      case FORM.strx1: return this.indexedString(c.u8(), u, at);
      case FORM.strx2: return this.indexedString(c.u16(), u, at);
      case FORM.strx3: return this.indexedString(c.u24(), u, at);
      case FORM.strx4: return this.indexedString(c.u32(), u, at);
      default:
        skipForm(c, form, u);
        return undefined;
    }
  }

  private indexedString(index: number, u: Unit, at: number): string {
    const so = this.s.strOffsets;
    if (so === undefined) this.info.fail('DW_FORM_strx used but .debug_str_offsets is missing', at);
    // Without DW_AT_str_offsets_base, the table starts right after the 8/16-byte DWARF 5 header.
    const base = u.strOffsetsBase ?? (u.offSize === 8 ? 16 : 8);
    const c = new Cursor(so, '.debug_str_offsets', this.be);
    const pos = base + index * u.offSize;
    if (pos + u.offSize > so.length) c.fail(`string index ${index} past the end (${so.length} bytes)`, pos);
    c.pos = pos;
    return this.stringAt(this.s.str, '.debug_str', c.offset(u.offSize), at);
  }

  /**
   * Reads the struct/member fields of interest and resolves the structs named
   * in `wanted` (struct name → member names).
   */
  run(wanted: Map<string, Set<string>>): Map<string, Map<string, number>> {
    const found = new Map<string, Map<string, number>>();
    const c = this.info;
    const sec = c.buf;
    while (c.pos < sec.length && found.size < wanted.size) {
      const unitStart = c.pos;
      c.end = sec.length;
      let length = c.u32();
      let offSize = 4;
      if (length === 0xffffffff) {
        length = c.u64();
        offSize = 8;
      } else if (length >= 0xfffffff0) {
        c.fail(`reserved unit length 0x${length.toString(16)}`, unitStart);
      }
      if (length > sec.length - c.pos) {
        c.fail(`unit length ${length} runs past the end of the section (${sec.length - c.pos} bytes left)`, unitStart);
      }
      const unitEnd = c.pos + length;
      c.end = unitEnd;
      const version = c.u16();
      if (version < 2 || version > 5) c.fail(`unsupported DWARF version ${version}`, c.pos - 2);
      let abbrevOffset: number;
      let addrSize: number;
      if (version >= 5) {
        const unitType = c.u8();
        addrSize = c.u8();
        abbrevOffset = c.offset(offSize);
        if (unitType === 2 || unitType === 6) c.skip(8 + offSize); // type signature, type offset
        else if (unitType === 4 || unitType === 5) c.skip(8); // dwo id
        else if (unitType !== 1 && unitType !== 3) c.fail(`unknown unit type ${unitType}`, unitStart);
      } else {
        abbrevOffset = c.offset(offSize);
        addrSize = c.u8();
      }
      if (addrSize !== 1 && addrSize !== 2 && addrSize !== 4 && addrSize !== 8) {
        c.fail(`bad address size ${addrSize}`, unitStart);
      }
      const u: Unit = { start: unitStart, end: unitEnd, version, offSize, addrSize, strOffsetsBase: undefined };
      this.walkUnit(u, this.abbrevs(abbrevOffset, u), wanted, found);
      c.end = sec.length;
      c.pos = unitEnd;
    }
    return found;
  }

  private walkUnit(
    u: Unit,
    table: Map<number, Abbrev>,
    wanted: Map<string, Set<string>>,
    found: Map<string, Map<string, number>>,
  ): void {
    const c = this.info;
    if (c.pos >= u.end) return;
    const rootAt = c.pos;
    const rootCode = c.uleb();
    if (rootCode === 0) return;
    const root = table.get(rootCode) ?? c.fail(`unknown abbreviation code ${rootCode}`, rootAt);
    let language: number | undefined;
    for (let i = 0; i < root.specs.length; i += 2) {
      const attr = root.specs[i]!;
      const form = root.specs[i + 1]!;
      if (attr === AT_LANGUAGE) language = readConstant(c, form, root.implicit.get(i / 2));
      else if (attr === AT_STR_OFFSETS_BASE && (form === FORM.sec_offset || form === FORM.data4 || form === FORM.data8)) {
        u.strOffsetsBase = c.offset(form === FORM.data4 ? 4 : form === FORM.data8 ? 8 : u.offSize);
      } else skipForm(c, form, u);
    }
    // Only Go units can define Go struct types; C units of cgo binaries are skipped whole.
    if (language !== undefined && language !== LANG_GO) return;
    if (!root.children) return;

    let depth = 1;
    let current: { name: string; members: Map<string, number>; want: Set<string>; depth: number } | null = null;
    while (depth > 0) {
      if (c.pos >= u.end) return; // lenient: tolerate a unit missing its trailing null entries
      const dieAt = c.pos;
      const code = c.uleb();
      if (code === 0) {
        depth--;
        if (current !== null && depth < current.depth) {
          found.set(current.name, current.members);
          current = null;
          if (found.size === wanted.size) return;
        }
        continue;
      }
      const ab = table.get(code) ?? c.fail(`unknown abbreviation code ${code}`, dieAt);

      let sibling: number | undefined;
      if (current !== null && depth === current.depth && ab.tag === TAG_MEMBER) {
        sibling = this.readMember(ab, u, current.want, current.members);
      } else if (current === null && ab.tag === TAG_STRUCTURE_TYPE) {
        const { name, sibling: sib } = this.readStruct(ab, u);
        sibling = sib;
        if (name !== undefined && ab.children && !found.has(name)) {
          const want = wanted.get(name);
          if (want !== undefined) {
            current = { name, members: new Map(), want, depth: depth + 1 };
            depth++;
            continue;
          }
        }
      } else if (ab.fixedSize >= 0 && !ab.hasSibling) {
        c.skip(ab.fixedSize);
      } else {
        sibling = this.skipAttributes(ab, u);
      }

      if (ab.children) {
        if (sibling !== undefined) {
          const target = u.start + sibling;
          if (target <= dieAt || target > u.end) c.fail(`DW_AT_sibling 0x${sibling.toString(16)} points outside the unit or backwards`, dieAt);
          c.pos = target;
        } else {
          depth++;
          if (depth > MAX_DEPTH) c.fail(`DIE nesting deeper than ${MAX_DEPTH}`, dieAt);
        }
      }
    }
    if (current !== null) found.set(current.name, current.members);
  }

  /** The real form behind DW_FORM_indirect (which the value itself names). */
  private direct(form: number): number {
    if (form !== FORM.indirect) return form;
    const c = this.info;
    const at = c.pos;
    const real = c.uleb();
    if (real === FORM.indirect) c.fail('DW_FORM_indirect pointing to DW_FORM_indirect', at);
    return real;
  }

  /** Skips a DIE's attributes, returning its unit-relative DW_AT_sibling if any. */
  private skipAttributes(ab: Abbrev, u: Unit): number | undefined {
    const c = this.info;
    let sibling: number | undefined;
    for (let i = 0; i < ab.specs.length; i += 2) {
      const attr = ab.specs[i]!;
      if (attr === AT_SIBLING) sibling = this.readSibling(this.direct(ab.specs[i + 1]!), u, ab.implicit.get(i / 2));
      else skipForm(c, ab.specs[i + 1]!, u);
    }
    return sibling;
  }

  private readSibling(form: number, u: Unit, implicitValue: number | undefined): number | undefined {
    const c = this.info;
    if (form === FORM.ref_addr) {
      const v = c.offset(u.version <= 2 ? u.addrSize : u.offSize);
      return v - u.start; // section-relative: make it unit-relative like the other ref forms
    }
    if (form === FORM.ref1 || form === FORM.ref2 || form === FORM.ref4 || form === FORM.ref8 || form === FORM.ref_udata) {
      return readConstant(c, form, implicitValue);
    }
    skipForm(c, form, u);
    return undefined;
  }

  private readStruct(ab: Abbrev, u: Unit): { name: string | undefined; sibling: number | undefined } {
    const c = this.info;
    let name: string | undefined;
    let sibling: number | undefined;
    for (let i = 0; i < ab.specs.length; i += 2) {
      const attr = ab.specs[i]!;
      const form = ab.specs[i + 1]!;
      if (attr === AT_NAME) name = this.readString(this.direct(form), u);
      else if (attr === AT_SIBLING) sibling = this.readSibling(this.direct(form), u, ab.implicit.get(i / 2));
      else skipForm(c, form, u);
    }
    return { name, sibling };
  }

  private readMember(ab: Abbrev, u: Unit, want: Set<string>, into: Map<string, number>): number | undefined {
    const c = this.info;
    let name: string | undefined;
    let sibling: number | undefined;
    let location: { form: number; at: number; implicit: number | undefined } | undefined;
    for (let i = 0; i < ab.specs.length; i += 2) {
      const attr = ab.specs[i]!;
      const form = ab.specs[i + 1]!;
      if (attr === AT_NAME) name = this.readString(this.direct(form), u);
      else if (attr === AT_SIBLING) sibling = this.readSibling(this.direct(form), u, ab.implicit.get(i / 2));
      else if (attr === AT_DATA_MEMBER_LOCATION) {
        const real = this.direct(form);
        location = { form: real, at: c.pos, implicit: ab.implicit.get(i / 2) };
        skipForm(c, real, u);
      } else skipForm(c, form, u);
    }
    // Decode the location only for wanted members: an exotic expression on a
    // field nobody asked for must not fail the lookup.
    if (name !== undefined && want.has(name) && !into.has(name)) {
      into.set(name, location === undefined ? 0 : this.memberLocation(location.form, location.at, location.implicit, u));
    }
    return sibling;
  }

  /** DW_AT_data_member_location: a constant, or (older producers) DW_OP_plus_uconst n. */
  private memberLocation(form: number, at: number, implicitValue: number | undefined, u: Unit): number {
    const c = new Cursor(this.info.buf, '.debug_info', this.be);
    c.pos = at;
    c.end = u.end;
    let len: number;
    switch (form) {
      case FORM.exprloc: case FORM.block: len = c.uleb(); break;
      case FORM.block1: len = c.u8(); break;
      case FORM.block2: len = c.u16(); break;
      case FORM.block4: len = c.u32(); break;
      default: {
        const v = readConstant(c, form, implicitValue);
        if (v < 0) c.fail(`negative member offset ${v}`, at);
        return v;
      }
    }
    const exprEnd = c.pos + len;
    if (len < 2 || exprEnd > c.end) c.fail(`bad member location expression length ${len}`, at);
    if (c.u8() !== OP_PLUS_UCONST) c.fail('unsupported member location expression (want DW_OP_plus_uconst)', at);
    c.end = exprEnd;
    const v = c.uleb();
    if (c.pos !== exprEnd) c.fail('trailing operations in member location expression', at);
    return v;
  }
}

function parseWanted(wanted: readonly string[]): Map<string, Set<string>> {
  const byStruct = new Map<string, Set<string>>();
  for (const field of wanted) {
    const dot = field.lastIndexOf('.');
    const s = field.slice(0, Math.max(dot, 0));
    const typeDot = s.lastIndexOf('.');
    // The struct part is itself qualified (pkg.Type): three non-empty parts.
    if (dot <= 0 || dot === field.length - 1 || typeDot <= 0 || typeDot === s.length - 1) {
      throw new TypeError(`field ${JSON.stringify(field)} is not of the form pkg.Struct.field`);
    }
    let set = byStruct.get(s);
    if (set === undefined) byStruct.set(s, (set = new Set()));
    set.add(field.slice(dot + 1));
  }
  return byStruct;
}

/**
 * Like {@link readStructOffsets}, but also says why a field was not found:
 * absent from its struct (it does not exist in this build) or struct missing.
 *
 * @throws DwarfError on malformed DWARF; TypeError on a badly formed field name.
 */
export function readStructFields(sections: DwarfSections, wanted: readonly string[]): StructFieldsResult {
  const byStruct = parseWanted(wanted);
  const result: StructFieldsResult = { offsets: new Map(), absent: [], structNotFound: [] };
  if (byStruct.size === 0) return result;
  const found = new Reader(sections).run(byStruct);
  for (const field of wanted) {
    const dot = field.lastIndexOf('.');
    const members = found.get(field.slice(0, dot));
    const off = members?.get(field.slice(dot + 1));
    if (off !== undefined) result.offsets.set(field, off);
    else if (members !== undefined) result.absent.push(field);
    else result.structNotFound.push(field);
  }
  return result;
}

/**
 * Byte offsets of struct members, looked up by qualified field name
 * (`net/http.Request.Method`: DW_TAG_structure_type `net/http.Request`, member
 * `Method`). Fields that are not found are simply absent from the map.
 *
 * @throws DwarfError on malformed DWARF; TypeError on a badly formed field name.
 */
export function readStructOffsets(sections: DwarfSections, wanted: readonly string[]): Map<string, number> {
  return readStructFields(sections, wanted).offsets;
}
