/**
 * Just enough ELF to find and decompress the DWARF sections that struct-offset
 * resolution needs. Deliberately self-contained (the full ELF/Go analysis lives
 * in daemon/analysis/); it reads the section headers and the few sections it
 * wants, never the whole file, so multi-hundred-megabyte binaries stay cheap.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import * as zlib from 'node:zlib';
import type { DwarfSections } from './dwarf.ts';
import { DwarfError } from './errors.ts';

/** Random access to the bytes of an ELF image. */
export interface ByteSource {
  readonly size: number;
  /** Returns exactly `length` bytes at `offset`; the caller has bounds-checked. */
  read(offset: number, length: number): Buffer;
}

/**
 * Upper bound for one decompressed section. A corrupt header can claim any
 * size; refusing absurd ones keeps a bad binary from exhausting memory.
 */
export const MAX_SECTION_BYTES = 1 << 30;

const SHT_NOBITS = 8;
const SHF_COMPRESSED = 0x800;
const ELFCOMPRESS_ZLIB = 1;
const ELFCOMPRESS_ZSTD = 2;
const SHN_XINDEX = 0xffff;
/** Far above any real binary; bounds the header loop on corrupt counts. */
const MAX_SECTIONS = 1 << 20;

/** One ELF section header, as far as this module reads it. */
export interface SectionHeader {
  name: string;
  type: number;
  flags: number;
  offset: number;
  size: number;
}

interface ElfLayout {
  is64: boolean;
  bigEndian: boolean;
  sections: SectionHeader[];
}

const HDR = 'ELF header';
const SHDRS = 'ELF section headers';

function readUint(buf: Buffer, at: number, bytes: 2 | 4 | 8, bigEndian: boolean, what: string): number {
  if (at < 0 || at + bytes > buf.length) throw new DwarfError(what, at, `truncated (${bytes}-byte field)`);
  if (bytes === 2) return bigEndian ? buf.readUInt16BE(at) : buf.readUInt16LE(at);
  if (bytes === 4) return bigEndian ? buf.readUInt32BE(at) : buf.readUInt32LE(at);
  const v = bigEndian ? buf.readBigUInt64BE(at) : buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DwarfError(what, at, `value ${v} out of range`);
  return Number(v);
}

function readLayout(src: ByteSource): ElfLayout {
  if (src.size < 52) throw new DwarfError(HDR, 0, `file too small for an ELF header (${src.size} bytes)`);
  const ident = src.read(0, Math.min(64, src.size));
  if (ident.readUInt32BE(0) !== 0x7f454c46) throw new DwarfError(HDR, 0, 'not an ELF file (bad magic)');
  const cls = ident[4];
  const data = ident[5];
  if (cls !== 1 && cls !== 2) throw new DwarfError(HDR, 4, `unknown ELF class ${cls}`);
  if (data !== 1 && data !== 2) throw new DwarfError(HDR, 5, `unknown ELF data encoding ${data}`);
  const is64 = cls === 2;
  const be = data === 2;
  if (is64 && ident.length < 64) throw new DwarfError(HDR, 0, 'truncated ELF64 header');

  let shoff = is64 ? readUint(ident, 0x28, 8, be, HDR) : readUint(ident, 0x20, 4, be, HDR);
  const shentsize = readUint(ident, is64 ? 0x3a : 0x2e, 2, be, HDR);
  let shnum = readUint(ident, is64 ? 0x3c : 0x30, 2, be, HDR);
  let shstrndx = readUint(ident, is64 ? 0x3e : 0x32, 2, be, HDR);
  const minEnt = is64 ? 64 : 40;
  if (shoff === 0) return { is64, bigEndian: be, sections: [] };
  if (shentsize < minEnt) throw new DwarfError(HDR, is64 ? 0x3a : 0x2e, `section header size ${shentsize} < ${minEnt}`);
  if (shoff + minEnt > src.size) throw new DwarfError(SHDRS, shoff, 'section header table lies past the end of the file');

  const readHeader = (index: number): { raw: Buffer; at: number } => {
    const at = shoff + index * shentsize;
    if (at + minEnt > src.size) throw new DwarfError(SHDRS, at, `section header ${index} lies past the end of the file`);
    return { raw: src.read(at, minEnt), at };
  };
  // Extended numbering (more than 0xff00 sections): the real counts live in section 0.
  if (shnum === 0 || shstrndx === SHN_XINDEX) {
    const { raw } = readHeader(0);
    if (shnum === 0) shnum = is64 ? readUint(raw, 32, 8, be, SHDRS) : readUint(raw, 20, 4, be, SHDRS);
    if (shstrndx === SHN_XINDEX) shstrndx = readUint(raw, is64 ? 40 : 24, 4, be, SHDRS);
  }
  if (shnum > MAX_SECTIONS || shoff + shnum * shentsize > src.size) {
    throw new DwarfError(SHDRS, shoff, `section count ${shnum} does not fit in the file`);
  }

  const raw: Array<{ nameOff: number; type: number; flags: number; offset: number; size: number }> = [];
  for (let i = 0; i < shnum; i++) {
    const { raw: h, at } = readHeader(i);
    const rec = is64
      ? {
          nameOff: readUint(h, 0, 4, be, SHDRS),
          type: readUint(h, 4, 4, be, SHDRS),
          flags: readUint(h, 8, 8, be, SHDRS),
          offset: readUint(h, 24, 8, be, SHDRS),
          size: readUint(h, 32, 8, be, SHDRS),
        }
      : {
          nameOff: readUint(h, 0, 4, be, SHDRS),
          type: readUint(h, 4, 4, be, SHDRS),
          flags: readUint(h, 8, 4, be, SHDRS),
          offset: readUint(h, 16, 4, be, SHDRS),
          size: readUint(h, 20, 4, be, SHDRS),
        };
    if (rec.type !== SHT_NOBITS && rec.offset + rec.size > src.size) {
      throw new DwarfError(SHDRS, at, `section ${i} (offset ${rec.offset}, size ${rec.size}) lies past the end of the file`);
    }
    raw.push(rec);
  }
  const strtab = raw[shstrndx];
  if (strtab === undefined) throw new DwarfError(HDR, 0, `section name table index ${shstrndx} out of range (${shnum} sections)`);
  const names = strtab.type === SHT_NOBITS ? Buffer.alloc(0) : src.read(strtab.offset, strtab.size);
  const sections = raw.map((r) => {
    let name = '';
    if (r.nameOff < names.length) {
      const end = names.indexOf(0, r.nameOff);
      name = names.toString('latin1', r.nameOff, end < 0 ? names.length : end);
    }
    return { name, type: r.type, flags: r.flags, offset: r.offset, size: r.size };
  });
  return { is64, bigEndian: be, sections };
}

function inflate(section: string, offset: number, body: Buffer, declared: number, algo: 'zlib' | 'zstd'): Buffer {
  if (declared > MAX_SECTION_BYTES) {
    throw new DwarfError(section, offset, `declared decompressed size ${declared} exceeds the ${MAX_SECTION_BYTES}-byte limit`);
  }
  let out: Buffer;
  try {
    if (algo === 'zlib') {
      out = inflateSync(body, { maxOutputLength: Math.max(declared, 1) });
    } else {
      const zstd = (zlib as { zstdDecompressSync?: (b: Buffer, o?: { maxOutputLength?: number }) => Buffer }).zstdDecompressSync;
      if (zstd === undefined) throw new Error('this Node.js has no zstd support');
      out = zstd(body, { maxOutputLength: Math.max(declared, 1) });
    }
  } catch (err) {
    throw new DwarfError(section, offset, `cannot decompress (${algo}): ${(err as Error).message}`, { cause: err });
  }
  if (out.length !== declared) {
    throw new DwarfError(section, offset, `decompressed to ${out.length} bytes, header declared ${declared}`);
  }
  return out;
}

function sectionData(src: ByteSource, layout: ElfLayout, sh: SectionHeader): Buffer {
  const raw = src.read(sh.offset, sh.size);
  if (sh.name.startsWith('.zdebug_')) {
    // Legacy GNU form: "ZLIB", 8-byte big-endian uncompressed size, zlib stream.
    if (raw.length < 12 || raw.toString('latin1', 0, 4) !== 'ZLIB') {
      throw new DwarfError(sh.name, 0, 'missing "ZLIB" header of a .zdebug section');
    }
    return inflate(sh.name, 0, raw.subarray(12), readUint(raw, 4, 8, true, sh.name), 'zlib');
  }
  if ((sh.flags & SHF_COMPRESSED) !== 0) {
    const hdrSize = layout.is64 ? 24 : 12;
    if (raw.length < hdrSize) throw new DwarfError(sh.name, 0, 'truncated compression header');
    const type = readUint(raw, 0, 4, layout.bigEndian, sh.name);
    const size = layout.is64 ? readUint(raw, 8, 8, layout.bigEndian, sh.name) : readUint(raw, 4, 4, layout.bigEndian, sh.name);
    if (type === ELFCOMPRESS_ZLIB) return inflate(sh.name, 0, raw.subarray(hdrSize), size, 'zlib');
    if (type === ELFCOMPRESS_ZSTD) return inflate(sh.name, 0, raw.subarray(hdrSize), size, 'zstd');
    throw new DwarfError(sh.name, 0, `unknown compression type ${type}`);
  }
  return raw;
}

const WANTED = {
  info: 'info',
  abbrev: 'abbrev',
  str: 'str',
  lineStr: 'line_str',
  strOffsets: 'str_offsets',
} as const;

/**
 * Finds the DWARF sections of an ELF image and returns them decompressed.
 * Handles plain `.debug_*`, SHF_COMPRESSED `.debug_*` (zlib, zstd) and legacy
 * `.zdebug_*` sections.
 *
 * @returns `null` when the image has no `.debug_info`/`.debug_abbrev` (a
 *   stripped binary), which is an expected case, not an error.
 * @throws DwarfError when the ELF headers or a compressed section are malformed.
 */
export function dwarfSectionsFromSource(src: ByteSource): DwarfSections | null {
  const layout = readLayout(src);
  const byName = new Map<string, SectionHeader>();
  for (const sh of layout.sections) {
    if (sh.type === SHT_NOBITS) continue; // a separate-debug-file stub carries no data
    if (!byName.has(sh.name)) byName.set(sh.name, sh);
  }
  const find = (suffix: string): Buffer | undefined => {
    const sh = byName.get(`.debug_${suffix}`) ?? byName.get(`.zdebug_${suffix}`);
    return sh === undefined ? undefined : sectionData(src, layout, sh);
  };
  const info = find(WANTED.info);
  const abbrev = find(WANTED.abbrev);
  if (info === undefined || abbrev === undefined) return null;
  const out: DwarfSections = { info, abbrev, bigEndian: layout.bigEndian };
  const str = find(WANTED.str);
  const lineStr = find(WANTED.lineStr);
  const strOffsets = find(WANTED.strOffsets);
  if (str !== undefined) out.str = str;
  if (lineStr !== undefined) out.lineStr = lineStr;
  if (strOffsets !== undefined) out.strOffsets = strOffsets;
  return out;
}

/** Section headers of an in-memory ELF image (for diagnostics and tests). */
export function elfSectionHeaders(image: Buffer): SectionHeader[] {
  return readLayout(imageSource(image)).sections;
}

/** SHF_COMPRESSED, for callers inspecting {@link SectionHeader.flags}. */
export const SECTION_COMPRESSED = SHF_COMPRESSED;

function imageSource(image: Buffer): ByteSource {
  return { size: image.length, read: (offset, length) => image.subarray(offset, offset + length) };
}

/** {@link dwarfSectionsFromSource} over an in-memory ELF image. */
export function dwarfSectionsFromImage(image: Buffer): DwarfSections | null {
  return dwarfSectionsFromSource(imageSource(image));
}

/**
 * Reads the DWARF sections of the ELF file at `path`, decompressed. Only the
 * headers and the wanted sections are read from disk.
 *
 * @returns `null` for a binary without DWARF.
 * @throws DwarfError for malformed ELF or section data; the usual fs errors
 *   (ENOENT, EACCES) for unreadable files.
 */
export function loadDwarfSections(path: string): DwarfSections | null {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    return dwarfSectionsFromSource({
      size,
      read: (offset, length) => {
        const buf = Buffer.allocUnsafe(length);
        let done = 0;
        while (done < length) {
          const n = readSync(fd, buf, done, length - done, offset + done);
          if (n === 0) throw new DwarfError(path, offset + done, 'file shrank while being read');
          done += n;
        }
        return buf;
      },
    });
  } finally {
    closeSync(fd);
  }
}
