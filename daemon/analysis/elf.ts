import zlib from 'node:zlib';
import { type BinaryFile, WindowReader } from './binary-file.ts';
import { GoBinaryError, hex } from './errors.ts';

/** ELF e_type values this module distinguishes. */
export const ET_EXEC = 2;
export const ET_DYN = 3;
/** e_machine of x86-64. */
export const EM_X86_64 = 62;

export const PT_LOAD = 1;
export const PT_DYNAMIC = 2;
export const PT_NOTE = 4;
export const PF_X = 1;
export const PF_W = 2;

export const SHT_SYMTAB = 2;
export const SHT_RELA = 4;
export const SHT_NOTE = 7;
export const SHT_NOBITS = 8;
export const SHF_ALLOC = 0x2;
export const SHF_EXECINSTR = 0x4;
export const SHF_COMPRESSED = 0x800;

export const STT_FUNC = 2;
export const R_X86_64_RELATIVE = 8;
const DT_RELA = 7n;
const DT_RELASZ = 8n;

const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
const SYM_SIZE = 24;
const RELA_SIZE = 24;
/** More sections or segments than this is not a real executable. */
const MAX_TABLE_ENTRIES = 1 << 16;
/** Decompressed section size limit; DWARF of the largest binaries is well below it. */
const MAX_DECOMPRESSED = 1024 * 1024 * 1024;

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
}

export interface SectionHeader {
  index: number;
  name: string;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  size: number;
  link: number;
  entsize: number;
}

/** One entry of an ELF symbol table, without its name (see {@link ElfFile.symbolName}). */
export interface ElfSymbol {
  nameOff: number;
  type: number;
  bind: number;
  shndx: number;
  value: number;
  size: number;
}

/** One ELF note. */
export interface ElfNote {
  name: string;
  type: number;
  desc: Buffer;
}

/**
 * A 64-bit little-endian ELF file: its header, program headers and section
 * headers, parsed and validated on open; section contents read on demand.
 */
export class ElfFile {
  readonly file: BinaryFile;
  readonly type: number;
  readonly machine: number;
  readonly entry: number;
  readonly programs: readonly ProgramHeader[];
  readonly sections: readonly SectionHeader[];

  private constructor(file: BinaryFile, type: number, machine: number, entry: number, programs: ProgramHeader[], sections: SectionHeader[]) {
    this.file = file;
    this.type = type;
    this.machine = machine;
    this.entry = entry;
    this.programs = programs;
    this.sections = sections;
  }

  get path(): string {
    return this.file.path;
  }

  /**
   * Parses the ELF header and its tables. Throws `NOT_ELF` for other files,
   * `UNSUPPORTED_ARCH` for 32-bit or big-endian ELF (the machine is checked
   * by callers that care), `TRUNCATED`/`CORRUPT` for damaged tables.
   * Takes ownership of `file`: it is closed if parsing fails.
   */
  static parse(file: BinaryFile): ElfFile {
    try {
      return ElfFile.#parse(file);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  static #parse(file: BinaryFile): ElfFile {
    const head = file.readUpTo(0, EHDR_SIZE, 'ELF header');
    const magic = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
    if (head.length < 4) {
      if (head.length > 0 && magic.subarray(0, head.length).equals(head)) file.fail('TRUNCATED', `ELF header cut short (${head.length} bytes)`);
      file.fail('NOT_ELF', `not an ELF file (${head.length} bytes)`);
    }
    if (!head.subarray(0, 4).equals(magic)) file.fail('NOT_ELF', 'not an ELF file (bad magic)');
    if (head.length < 6) file.fail('TRUNCATED', `ELF header cut short (${head.length} bytes)`);
    if (head[4] !== 2) file.fail('UNSUPPORTED_ARCH', head[4] === 1 ? '32-bit ELF is not supported (amd64 only)' : `unknown ELF class ${head[4]}`);
    if (head[5] !== 1) file.fail('UNSUPPORTED_ARCH', head[5] === 2 ? 'big-endian ELF is not supported (amd64 only)' : `unknown ELF data encoding ${head[5]}`);
    if (head.length < EHDR_SIZE) file.fail('TRUNCATED', `ELF header cut short (${head.length} of ${EHDR_SIZE} bytes)`);

    const type = head.readUInt16LE(16);
    const machine = head.readUInt16LE(18);
    const entry = file.u64(head, 24, 'e_entry');
    const phoff = file.u64(head, 32, 'e_phoff');
    const shoff = file.u64(head, 40, 'e_shoff');
    const phentsize = head.readUInt16LE(54);
    let phnum = head.readUInt16LE(56);
    const shentsize = head.readUInt16LE(58);
    let shnum = head.readUInt16LE(60);
    let shstrndx = head.readUInt16LE(62);

    // Section 0 carries the real counts when they overflow the 16-bit fields.
    let sec0: Buffer | undefined;
    if (shoff !== 0) {
      if (shentsize !== SHDR_SIZE) file.fail('CORRUPT', `section header entry size ${shentsize}, expected ${SHDR_SIZE}`);
      sec0 = file.read(shoff, SHDR_SIZE, 'section header 0');
      if (shnum === 0) shnum = checkedCount(file, file.u64(sec0, 32, 'extended section count'), 'section count');
      if (shstrndx === 0xffff) shstrndx = sec0.readUInt32LE(40);
    } else {
      shnum = 0;
    }
    if (phnum === 0xffff) {
      if (!sec0) file.fail('CORRUPT', 'extended program header count without section headers');
      phnum = checkedCount(file, sec0.readUInt32LE(44), 'program header count');
    }

    const programs: ProgramHeader[] = [];
    if (phnum > 0) {
      if (phentsize !== PHDR_SIZE) file.fail('CORRUPT', `program header entry size ${phentsize}, expected ${PHDR_SIZE}`);
      const tab = file.read(phoff, phnum * PHDR_SIZE, `program header table (${phnum} entries)`);
      for (let i = 0; i < phnum; i++) {
        const o = i * PHDR_SIZE;
        const what = `program header ${i}`;
        const ph: ProgramHeader = {
          type: tab.readUInt32LE(o),
          flags: tab.readUInt32LE(o + 4),
          offset: file.u64(tab, o + 8, what),
          vaddr: file.u64(tab, o + 16, what),
          filesz: file.u64(tab, o + 32, what),
          memsz: file.u64(tab, o + 40, what),
        };
        if (ph.type === PT_LOAD) {
          if (ph.filesz > ph.memsz) file.fail('CORRUPT', `${what}: file size ${hex(ph.filesz)} exceeds memory size ${hex(ph.memsz)}`);
          if (!Number.isSafeInteger(ph.vaddr + ph.memsz)) file.fail('CORRUPT', `${what}: segment wraps the address space`);
          file.checkExtent(ph.offset, ph.filesz, `loadable segment ${i}`);
        }
        programs.push(ph);
      }
    }

    const sections: SectionHeader[] = [];
    if (shnum > 0) {
      const tab = file.read(shoff, shnum * SHDR_SIZE, `section header table (${shnum} entries)`);
      const raw: Omit<SectionHeader, 'name'>[] = [];
      const nameOffs: number[] = [];
      for (let i = 0; i < shnum; i++) {
        const o = i * SHDR_SIZE;
        const what = `section header ${i}`;
        nameOffs.push(tab.readUInt32LE(o));
        const sh = {
          index: i,
          type: tab.readUInt32LE(o + 4),
          flags: file.u64(tab, o + 8, what),
          addr: file.u64(tab, o + 16, what),
          offset: file.u64(tab, o + 24, what),
          size: file.u64(tab, o + 32, what),
          link: tab.readUInt32LE(o + 40),
          entsize: file.u64(tab, o + 56, what),
        };
        if (i > 0 && sh.type !== SHT_NOBITS && sh.type !== 0) {
          file.checkExtent(sh.offset, sh.size, `section ${i} contents`);
        }
        raw.push(sh);
      }
      let names: Buffer | undefined;
      if (shstrndx !== 0) {
        const strsec = raw[shstrndx];
        if (!strsec) file.fail('CORRUPT', `section name table index ${shstrndx} out of range (${shnum} sections)`);
        names = file.read(strsec.offset, strsec.size, 'section name table');
      }
      for (let i = 0; i < shnum; i++) {
        const off = nameOffs[i]!;
        let name = '';
        if (names && off !== 0) {
          if (off >= names.length) file.fail('CORRUPT', `section ${i}: name offset ${hex(off)} outside the section name table`);
          let end = names.indexOf(0, off);
          if (end < 0) end = names.length;
          name = names.toString('latin1', off, end);
        }
        sections.push({ ...raw[i]!, name });
      }
    }
    return new ElfFile(file, type, machine, entry, programs, sections);
  }

  /** First section with this exact name. */
  section(name: string): SectionHeader | undefined {
    return this.sections.find((s) => s.name === name);
  }

  /** Loadable segments (PT_LOAD), in table order. */
  loads(): ProgramHeader[] {
    return this.programs.filter((p) => p.type === PT_LOAD);
  }

  /**
   * File offset of virtual address `vaddr` with at least `length` bytes of
   * file-backed data after it in the same PT_LOAD segment; undefined if none.
   */
  tryFileOffset(vaddr: number, length = 1): number | undefined {
    if (!Number.isSafeInteger(vaddr) || vaddr < 0) return undefined;
    for (const p of this.programs) {
      if (p.type !== PT_LOAD) continue;
      if (vaddr >= p.vaddr && vaddr + length <= p.vaddr + p.filesz) return p.offset + (vaddr - p.vaddr);
    }
    return undefined;
  }

  /** Like {@link tryFileOffset} but throws `CORRUPT` naming `what`. */
  fileOffset(vaddr: number, length: number, what: string): number {
    const off = this.tryFileOffset(vaddr, length);
    if (off === undefined) this.file.fail('CORRUPT', `${what}: address ${hex(vaddr)} (+${length}) is not in any loadable segment`);
    return off;
  }

  /** Reads `length` bytes at virtual address `vaddr`. */
  readAt(vaddr: number, length: number, what: string): Buffer {
    return this.file.read(this.fileOffset(vaddr, length, what), length, what);
  }

  /** The executable PT_LOAD containing `vaddr`, if any. */
  execSegmentAt(vaddr: number): ProgramHeader | undefined {
    return this.programs.find((p) => p.type === PT_LOAD && (p.flags & PF_X) !== 0 && vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz);
  }

  /**
   * Raw (on-disk) contents of a section. Compressed sections are returned
   * compressed; use {@link sectionData} for their contents.
   */
  rawSection(sec: SectionHeader): Buffer {
    if (sec.type === SHT_NOBITS) return Buffer.alloc(0);
    return this.file.read(sec.offset, sec.size, `section ${sec.name || sec.index}`);
  }

  /**
   * Contents of a section, decompressed if it is SHF_COMPRESSED (zlib, or
   * zstd where this Node.js supports it) or an old-style `.zdebug_*` section.
   * Throws `CORRUPT` for a malformed compression header or stream, or a
   * declared size above 1 GiB; `TRUNCATED` for contents past the end of the file.
   */
  sectionData(sec: SectionHeader): Buffer {
    const raw = this.rawSection(sec);
    const what = `section ${sec.name || sec.index}`;
    if ((sec.flags & SHF_COMPRESSED) !== 0) {
      if (raw.length < 24) this.file.fail('CORRUPT', `${what}: compressed section too small for its header`);
      const chType = raw.readUInt32LE(0);
      const size = this.file.u64(raw, 8, `${what} uncompressed size`);
      return this.#decompress(chType === 1 ? 'zlib' : chType === 2 ? 'zstd' : `type ${chType}`, raw.subarray(24), size, what);
    }
    if (sec.name.startsWith('.zdebug_')) {
      // The legacy GNU form: "ZLIB", the uncompressed size (8 bytes, big-endian), a zlib stream.
      if (raw.length < 12 || raw.toString('latin1', 0, 4) !== 'ZLIB') this.file.fail('CORRUPT', `${what}: missing "ZLIB" header of a .zdebug section`);
      const size = Number(raw.readBigUInt64BE(4));
      return this.#decompress('zlib', raw.subarray(12), size, what);
    }
    return raw;
  }

  #decompress(kind: string, data: Buffer, size: number, what: string): Buffer {
    // A corrupt header can claim any size: refuse absurd ones before allocating.
    if (!Number.isSafeInteger(size) || size > MAX_DECOMPRESSED) {
      this.file.fail('CORRUPT', `${what}: declared decompressed size ${size} exceeds the ${MAX_DECOMPRESSED}-byte limit`);
    }
    let out: Buffer;
    try {
      if (kind === 'zlib') {
        out = zlib.inflateSync(data, { maxOutputLength: Math.max(size, 1) });
      } else if (kind === 'zstd') {
        const z = zlib as unknown as { zstdDecompressSync?: (b: Buffer, o: { maxOutputLength: number }) => Buffer };
        if (!z.zstdDecompressSync) this.file.fail('CORRUPT', `${what}: zstd-compressed, which this Node.js cannot decompress`);
        out = z.zstdDecompressSync(data, { maxOutputLength: Math.max(size, 1) });
      } else {
        this.file.fail('CORRUPT', `${what}: unknown compression ${kind}`);
      }
    } catch (err) {
      if (err instanceof GoBinaryError) throw err;
      this.file.fail('CORRUPT', `${what}: cannot decompress (${err instanceof Error ? err.message : String(err)})`);
    }
    if (out.length !== size) this.file.fail('CORRUPT', `${what}: decompressed to ${out.length} bytes, header says ${size}`);
    return out;
  }

  /**
   * Calls `fn` for every symbol of the `.symtab` section (streamed, so the
   * table is never held whole). Returns false if there is no `.symtab`.
   */
  forEachSymbol(fn: (sym: ElfSymbol, index: number) => void): boolean {
    const sec = this.sections.find((s) => s.type === SHT_SYMTAB);
    if (!sec) return false;
    const what = `symbol table ${sec.name}`;
    if (sec.entsize !== SYM_SIZE) this.file.fail('CORRUPT', `${what}: entry size ${sec.entsize}, expected ${SYM_SIZE}`);
    if (sec.size % SYM_SIZE !== 0) this.file.fail('CORRUPT', `${what}: size ${sec.size} is not a multiple of ${SYM_SIZE}`);
    const count = sec.size / SYM_SIZE;
    const reader = new WindowReader(this.file, sec.offset, sec.offset + sec.size, what, SYM_SIZE * 16384);
    for (let i = 0; i < count; i++) {
      const { buf, pos } = reader.bytes(i * SYM_SIZE, SYM_SIZE);
      const info = buf[pos + 4]!;
      fn(
        {
          nameOff: buf.readUInt32LE(pos),
          type: info & 0xf,
          bind: info >> 4,
          shndx: buf.readUInt16LE(pos + 6),
          value: this.file.u64(buf, pos + 8, `${what} entry ${i}`),
          size: this.file.u64(buf, pos + 16, `${what} entry ${i}`),
        },
        i,
      );
    }
    return true;
  }

  /** The string table holding `.symtab`'s names. */
  symbolStringTable(): SectionHeader | undefined {
    const sec = this.sections.find((s) => s.type === SHT_SYMTAB);
    if (!sec) return undefined;
    const str = this.sections[sec.link];
    if (!str || sec.link === 0) this.file.fail('CORRUPT', `symbol table ${sec.name}: string table index ${sec.link} out of range`);
    return str;
  }

  /**
   * Values of the named `.symtab` symbols (first occurrence of each), in
   * one pass over the table. Empty when there is no `.symtab`.
   */
  symbolValues(wanted: readonly string[]): Map<string, number> {
    const found = new Map<string, number>();
    const strsec = this.symbolStringTable();
    if (!strsec) return found;
    const byLength = new Map<number, Buffer[]>();
    for (const w of wanted) {
      const b = Buffer.from(w, 'utf8');
      byLength.set(b.length, [...(byLength.get(b.length) ?? []), b]);
    }
    const maxLength = Math.max(0, ...byLength.keys());
    const names = new WindowReader(this.file, strsec.offset, strsec.offset + strsec.size, 'symbol string table');
    this.forEachSymbol((sym) => {
      if (sym.nameOff === 0 || found.size === wanted.length) return;
      const name = names.cstring(sym.nameOff, 1 << 20);
      if (name.length > maxLength) return;
      for (const b of byLength.get(name.length) ?? []) {
        const key = b.toString('utf8');
        if (!found.has(key) && name.equals(b)) found.set(key, sym.value);
      }
    });
    return found;
  }

  /**
   * Value stored by the dynamic linker at `vaddr` according to an
   * R_X86_64_RELATIVE relocation (its addend), if there is one. Useful for
   * PIE binaries whose pointers are only meaningful after relocation.
   */
  relativeRelocationAt(vaddr: number): number | undefined {
    let found: number | undefined;
    this.#forEachRelative((offset, addend) => {
      if (offset !== vaddr) return true;
      found = addend;
      return false;
    });
    return found;
  }

  /** Position-independent (ELF type DYN): pointers may be left for the dynamic linker to fill in. */
  get isPositionIndependent(): boolean {
    return this.type === ET_DYN;
  }

  /** Every R_X86_64_RELATIVE relocation: address → value the dynamic linker stores there. */
  relativeRelocations(): Map<number, number> {
    const out = new Map<number, number>();
    this.#forEachRelative((offset, addend) => {
      out.set(offset, addend);
      return true;
    });
    return out;
  }

  /** Addresses that R_X86_64_RELATIVE relocations set to `target`. */
  relativeRelocationsTo(target: number): number[] {
    const out: number[] = [];
    this.#forEachRelative((offset, addend) => {
      if (addend === target) out.push(offset);
      return out.length < 64;
    });
    return out;
  }

  #forEachRelative(fn: (offset: number, addend: number) => boolean): void {
    for (const table of this.#relaTables()) {
      const reader = new WindowReader(this.file, table.offset, table.offset + table.size, 'relocation table', RELA_SIZE * 16384);
      for (let i = 0; i < Math.floor(table.size / RELA_SIZE); i++) {
        const { buf, pos } = reader.bytes(i * RELA_SIZE, RELA_SIZE);
        if (buf.readUInt32LE(pos + 8) !== R_X86_64_RELATIVE || buf.readUInt32LE(pos + 12) !== 0) continue;
        const addend = buf.readBigInt64LE(pos + 16);
        if (addend < 0n || addend > BigInt(Number.MAX_SAFE_INTEGER)) continue;
        if (!fn(this.file.u64(buf, pos, 'relocation offset'), Number(addend))) return;
      }
    }
  }

  /** RELA tables: allocated SHT_RELA sections, or DT_RELA of the dynamic segment when there are no section headers. */
  #relaTables(): { offset: number; size: number }[] {
    if (this.sections.length > 0) {
      return this.sections.filter((s) => s.type === SHT_RELA && (s.flags & SHF_ALLOC) !== 0);
    }
    const dyn = this.programs.find((p) => p.type === PT_DYNAMIC);
    if (!dyn || dyn.filesz > 1 << 20) return [];
    const buf = this.file.read(dyn.offset, dyn.filesz - (dyn.filesz % 16), 'dynamic segment');
    let rela: number | undefined;
    let size: number | undefined;
    for (let pos = 0; pos + 16 <= buf.length; pos += 16) {
      const tag = buf.readBigUInt64LE(pos);
      if (tag === 0n) break;
      if (tag === DT_RELA) rela = this.file.u64(buf, pos + 8, 'DT_RELA');
      if (tag === DT_RELASZ) size = this.file.u64(buf, pos + 8, 'DT_RELASZ');
    }
    if (rela === undefined || size === undefined) return [];
    const offset = this.tryFileOffset(rela, size);
    return offset === undefined ? [] : [{ offset, size }];
  }

  /** Notes from SHT_NOTE sections, or from PT_NOTE segments when there are no section headers. */
  notes(): ElfNote[] {
    const out: ElfNote[] = [];
    const regions: { offset: number; size: number }[] = this.sections.length > 0
      ? this.sections.filter((s) => s.type === SHT_NOTE)
      : this.programs.filter((p) => p.type === PT_NOTE).map((p) => ({ offset: p.offset, size: p.filesz }));
    for (const r of regions) {
      if (r.size > 1 << 20) continue;
      const buf = this.file.read(r.offset, r.size, 'note');
      let pos = 0;
      while (pos + 12 <= buf.length) {
        const namesz = buf.readUInt32LE(pos);
        const descsz = buf.readUInt32LE(pos + 4);
        const type = buf.readUInt32LE(pos + 8);
        const nameStart = pos + 12;
        const descStart = nameStart + align4(namesz);
        const next = descStart + align4(descsz);
        if (next > buf.length) break;
        const name = buf.toString('latin1', nameStart, nameStart + namesz).replace(/\0+$/, '');
        out.push({ name, type, desc: buf.subarray(descStart, descStart + descsz) });
        pos = next;
      }
    }
    return out;
  }

  close(): void {
    this.file.close();
  }
}

function align4(n: number): number {
  return n + ((4 - (n % 4)) % 4);
}

function checkedCount(file: BinaryFile, n: number, what: string): number {
  if (n > MAX_TABLE_ENTRIES) file.fail('CORRUPT', `absurd ${what} ${n}`);
  return n;
}
