import { WindowReader } from './binary-file.ts';
import type { BinaryFile } from './binary-file.ts';
import { STT_FUNC } from './elf.ts';
import type { ElfFile } from './elf.ts';
import { forEachPclnFunction } from './pclntab.ts';
import type { Pclntab } from './pclntab.ts';

/** A function's name and address range. */
export interface GoFunction {
  /**
   * Fully qualified Go name, e.g. `net/http.serverHandler.ServeHTTP`, spelt
   * as in the symbol table: compiler-generated names have `.` where the
   * pclntab has `·` (the linker rewrites them so), and lookups treat the two
   * as equal.
   */
  name: string;
  /** Virtual address of the first instruction. */
  entry: number;
  /** Virtual address just past the function (exclusive). */
  end: number;
}

/** Which table function addresses come from. */
export type FunctionSource = 'symtab' | 'pclntab';

const EMPTY = -1;

/**
 * Name → address index over a binary's functions that keeps no names in
 * memory: per function it holds the entry, end, a 32-bit hash of the name
 * and the file offset of the name, and confirms a hash match by reading
 * the name back from the file. About 40 bytes per function (under 1 MiB
 * for the 20,000 functions of the Go compiler), so an agent can hold
 * indexes of many large binaries at once.
 */
export class FunctionIndex {
  readonly source: FunctionSource;
  readonly count: number;
  readonly #file: BinaryFile;
  readonly #entries: Float64Array;
  readonly #ends: Float64Array;
  readonly #nameOffsets: Float64Array;
  readonly #hashes: Uint32Array;
  readonly #slots: Int32Array;
  readonly #namesStart: number;
  readonly #namesEnd: number;

  private constructor(file: BinaryFile, source: FunctionSource, b: Builder, namesStart: number, namesEnd: number) {
    this.#file = file;
    this.source = source;
    this.count = b.entries.length;
    this.#entries = Float64Array.from(b.entries);
    this.#ends = Float64Array.from(b.ends);
    this.#nameOffsets = Float64Array.from(b.nameOffsets);
    this.#hashes = Uint32Array.from(b.hashes);
    this.#namesStart = namesStart;
    this.#namesEnd = namesEnd;
    let size = 16;
    while (size < this.count * 2) size *= 2;
    this.#slots = new Int32Array(size).fill(EMPTY);
    const mask = size - 1;
    for (let i = 0; i < this.count; i++) {
      let s = this.#hashes[i]! & mask;
      while (this.#slots[s] !== EMPTY) s = (s + 1) & mask;
      this.#slots[s] = i;
    }
  }

  /**
   * Indexes the STT_FUNC symbols of `.symtab` (entry = value, end = value +
   * size). Returns undefined if the binary has no `.symtab`.
   */
  static fromSymtab(elf: ElfFile): FunctionIndex | undefined {
    const strsec = elf.symbolStringTable();
    if (!strsec) return undefined;
    const names = new WindowReader(elf.file, strsec.offset, strsec.offset + strsec.size, 'symbol string table');
    const b = new Builder();
    elf.forEachSymbol((sym) => {
      if (sym.type !== STT_FUNC || sym.nameOff === 0 || sym.shndx === 0) return;
      const name = names.cstring(sym.nameOff, 1 << 20);
      b.add(name, sym.value, sym.value + sym.size, strsec.offset + sym.nameOff);
    });
    return new FunctionIndex(elf.file, 'symtab', b, strsec.offset, strsec.offset + strsec.size);
  }

  /** Indexes the functions of a located pclntab (end = next function's entry). */
  static fromPclntab(elf: ElfFile, t: Pclntab): FunctionIndex {
    const b = new Builder();
    forEachPclnFunction(elf, t, (name, entry, end, nameFileOffset) => b.add(name, entry, end, nameFileOffset));
    const namesStart = t.offset + t.funcnameOffset;
    return new FunctionIndex(elf.file, 'pclntab', b, namesStart, namesStart + t.funcnameSize);
  }

  /** The first indexed function with this name (`·` and `.` compare equal). */
  find(name: string): GoFunction | undefined {
    const want = normalizeName(Buffer.from(name, 'utf8'));
    const h = fnv1a(want);
    const mask = this.#slots.length - 1;
    for (let s = h & mask, probes = 0; probes < this.#slots.length; s = (s + 1) & mask, probes++) {
      const i = this.#slots[s]!;
      if (i === EMPTY) return undefined;
      if (this.#hashes[i] !== h) continue;
      const off = this.#nameOffsets[i]!;
      // A stored `·` is two bytes where `want` has one.
      const raw = this.#file.read(off, Math.min(want.length * 2 + 1, this.#namesEnd - off), 'function name');
      const nul = raw.indexOf(0);
      if (nul >= 0 && normalizeName(raw.subarray(0, nul)).equals(want)) {
        return { name: want.toString('utf8'), entry: this.#entries[i]!, end: this.#ends[i]! };
      }
    }
    return undefined;
  }

  /** Every indexed function, in table order (names are read back from the file). */
  *all(): IterableIterator<GoFunction> {
    const names = new WindowReader(this.#file, this.#namesStart, this.#namesEnd, 'function names');
    for (let i = 0; i < this.count; i++) {
      const name = normalizeName(names.cstring(this.#nameOffsets[i]! - this.#namesStart, 1 << 20)).toString('utf8');
      yield { name, entry: this.#entries[i]!, end: this.#ends[i]! };
    }
  }
}

class Builder {
  readonly entries: number[] = [];
  readonly ends: number[] = [];
  readonly nameOffsets: number[] = [];
  readonly hashes: number[] = [];

  add(name: Buffer, entry: number, end: number, nameOffset: number): void {
    this.entries.push(entry);
    this.ends.push(end);
    this.nameOffsets.push(nameOffset);
    this.hashes.push(fnv1a(normalizeName(name)));
  }
}

function fnv1a(buf: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < buf.length; i++) {
    h ^= buf[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** `·` (UTF-8 C2 B7) → `.`, as the linker does when writing the symbol table. */
function normalizeName(name: Buffer): Buffer {
  let i = name.indexOf(0xb7);
  if (i < 0) return name;
  const out: number[] = [];
  let from = 0;
  for (; i >= 0; i = name.indexOf(0xb7, i + 1)) {
    if (i === 0 || name[i - 1] !== 0xc2) continue;
    for (let j = from; j < i - 1; j++) out.push(name[j]!);
    out.push(0x2e);
    from = i + 1;
  }
  for (let j = from; j < name.length; j++) out.push(name[j]!);
  return Buffer.from(out);
}
