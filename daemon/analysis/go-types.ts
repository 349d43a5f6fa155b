/**
 * A reader of the type descriptors the Go runtime keeps in every Go binary,
 * stripped or not (`runtime._type`, since Go 1.21 `internal/abi.Type`): for
 * each named struct type, its package path, name, size, and every field's
 * name, type and byte offset. This is what lets gotrail find struct-field
 * offsets in binaries without DWARF and of versions no database knows.
 *
 * ## Where the descriptors are
 *
 * The module data (`runtime.firstmoduledata`, found from the pclntab header
 * it points at) holds `types`/`etypes`, the range every descriptor and name
 * lives in, and the roots of the walk:
 *
 * - Go 1.17–1.26: `typelinks` (offsets from `types` of the descriptors the
 *   reflect package can construct) and `itablinks` (pointers to the
 *   compiler-generated itabs, each naming a concrete type and an interface);
 * - Go 1.27 and later: no typelinks; the descriptors lie one after the other
 *   in `[types+8, types+typedesclen)` and the itabs in
 *   `[types+itaboffset, +itabsize)`, each walked by its own size.
 *
 * From the roots the walk follows every type a descriptor refers to: pointer,
 * slice, array, chan and map element (and key) types, struct field types,
 * function parameters, interface and method signatures, and the pointer type
 * of each type (`PtrToThis`). A struct type no root reaches has no
 * descriptor worth the name in this binary: its fields are reported as not
 * found, and callers fall back to other sources.
 *
 * ## Layouts, per Go version (amd64)
 *
 * Checked against the Go runtime's own definitions (runtime/symtab.go
 * `moduledata`, runtime/type.go, internal/abi/type.go) of Go 1.19, 1.26 and
 * 1.27, and test binaries of those three versions; the other versions'
 * differences are facts from the Go release history, listed here:
 *
 * | Go        | moduledata offsets (bytes)                                        | struct field offset        |
 * |-----------|-------------------------------------------------------------------|----------------------------|
 * | 1.17      | types 280, etypes 288, typelinks 320, itablinks 344               | `offsetEmbed` = off<<1 \| embedded |
 * | 1.18      | + rodata, gofunc: typelinks 336, itablinks 360                     | `offsetEmbed`              |
 * | 1.19      | as 1.18                                                           | plain offset; embedded in the name's flag bit 3 |
 * | 1.20–1.25 | + covctrs, ecovctrs: types 296, etypes 304, typelinks 352, itablinks 376 | plain                |
 * | 1.26      | + epclntab: typelinks 360, itablinks 384                          | plain                      |
 * | 1.27      | types 296, typedesclen 304, etypes 312, itaboffset 320, itabsize 328; no typelinks/itablinks | plain |
 *
 * Unchanged over all of them: the 48-byte type header (size, ptrdata, hash,
 * tflag, align, fieldAlign, kind, equal, gcdata, str, ptrToThis; the kind in
 * the low 5 bits), names (a flag byte, a varint length, the bytes, then an
 * optional varint-prefixed tag), the 16-byte uncommon type right after the
 * kind-specific part, 24-byte struct fields (name, type, offset).
 *
 * ## How a layout change is detected rather than misread
 *
 * The layout is chosen by the Go version in the build info; a version newer
 * than the newest known gets the newest layout. Everything read is then
 * validated, and any failure is a {@link GoTypesError} (`LAYOUT` when the
 * data is well-formed but does not fit the layout, which is what a new Go
 * version's change would look like):
 *
 * - module data: it points at this binary's pclntab; `types < etypes`, both
 *   file-backed in one segment; slices have len = cap; the text address
 *   agrees with the pclntab's;
 * - every descriptor: inside `[types, etypes)`, 8-byte aligned, a valid kind,
 *   power-of-two alignments, size a multiple of the alignment, ptrdata ≤
 *   size, its name inside the range and valid UTF-8;
 * - every struct: len = cap for its fields, field offsets non-decreasing,
 *   each field aligned for its type and ending within the struct.
 *
 * A misread field offset (the `offsetEmbed` doubling of 1.17–1.18, say)
 * breaks the last two in virtually every struct, so one misread binary fails
 * loudly instead of yielding wrong offsets; tests rewrite the build info of
 * real binaries to neighbouring versions to show it.
 *
 * All reads are bounds-checked, every loop is bounded by the data it
 * consumes or by {@link MAX_TYPES}, and no exception other than
 * GoTypesError escapes {@link readGoTypes}.
 *
 * @module
 */
import type { ElfFile } from './elf.ts';
import { GoBinaryError, hex } from './errors.ts';
import type { Pclntab, SymbolLookup } from './pclntab.ts';
import { findModuledata } from './pclntab.ts';

/**
 * Why the type metadata could not be read.
 *
 * - `NO_MODULEDATA`: the module data was not found.
 * - `LAYOUT`: the data does not fit the layout of the binary's Go version
 *   (a Go version whose runtime changed the layout, or a wrong version).
 * - `CORRUPT`: inconsistent or absurd values (damaged file).
 * - `TRUNCATED`: data referred to lies beyond the end of the file.
 * - `UNSUPPORTED_VERSION`: a Go version before 1.17, or none.
 */
export type GoTypesErrorCode = 'NO_MODULEDATA' | 'LAYOUT' | 'CORRUPT' | 'TRUNCATED' | 'UNSUPPORTED_VERSION';

/** The only error {@link readGoTypes} throws; its message names the file. */
export class GoTypesError extends Error {
  readonly code: GoTypesErrorCode;
  readonly path: string;
  readonly detail: string;
  constructor(code: GoTypesErrorCode, path: string, detail: string, options?: { cause?: unknown }) {
    super(`${path}: type metadata: ${detail}`, options);
    this.name = 'GoTypesError';
    this.code = code;
    this.path = path;
    this.detail = detail;
  }
}

/** Go type kinds (internal/abi.Kind), the low 5 bits of the kind byte. */
export const KIND = {
  Bool: 1, Int: 2, Int8: 3, Int16: 4, Int32: 5, Int64: 6, Uint: 7, Uint8: 8, Uint16: 9, Uint32: 10, Uint64: 11,
  Uintptr: 12, Float32: 13, Float64: 14, Complex64: 15, Complex128: 16, Array: 17, Chan: 18, Func: 19,
  Interface: 20, Map: 21, Pointer: 22, Slice: 23, String: 24, Struct: 25, UnsafePointer: 26,
} as const;

/** One field of a struct type. */
export interface GoStructField {
  /** Field name; for an embedded field the type's name (`Reader` for `*bufio.Reader`). */
  name: string;
  /** Byte offset in the struct. */
  offset: number;
  /** The field type's string form, as reflect prints it (`*bufio.Reader`, `[]uint8`). */
  type: string;
  /** Size of the field's type in bytes. */
  size: number;
  embedded: boolean;
}

/** A named struct type. */
export interface GoStructType {
  /** Qualified name as DWARF spells it: `net/http.Request`, `sync/atomic.Pointer[net/http.response]`. */
  name: string;
  /** Import path of the defining package. */
  pkgPath: string;
  /** Size in bytes. */
  size: number;
  align: number;
  fields: GoStructField[];
}

/** What {@link GoTypes.fieldOffsets} found, in the shape of the DWARF reader's result. */
export interface GoTypesFieldResult {
  offsets: Map<string, number>;
  /** The struct was found but has no such field (the field does not exist in this build). */
  absent: string[];
  /** No descriptor of the struct is reachable in this binary. */
  structNotFound: string[];
}

/** The named struct types of one binary. */
export interface GoTypes {
  /** Layout used, e.g. `go1.20` (the first Go version with that layout). */
  readonly layout: string;
  /** Descriptors walked. */
  readonly typeCount: number;
  /** Virtual addresses `[types, etypes)` the descriptors and names lie in. */
  readonly range: { start: number; end: number };
  /** Virtual address of the module data. */
  readonly moduledata: number;
  /** Named struct types, by qualified name. */
  readonly structs: ReadonlyMap<string, GoStructType>;
  /** Offsets of `pkg.Struct.field` names. */
  fieldOffsets(wanted: readonly string[]): GoTypesFieldResult;
}

/** Upper bound on descriptors walked: the largest Go binaries hold well under 10^5. */
export const MAX_TYPES = 1 << 20;
/** Upper bound on the `[types, etypes)` range read into memory. */
const MAX_TYPES_RANGE = 256 << 20;
const PTR = 8;
const TYPE_HEADER = 48;
const UNCOMMON_SIZE = 16;
const METHOD_SIZE = 16;
const IMETHOD_SIZE = 8;
const STRUCT_FIELD_SIZE = 24;
const ITAB_HEADER = 32;
const TFLAG_UNCOMMON = 1 << 0;
const TFLAG_EXTRA_STAR = 1 << 1;
const TFLAG_NAMED = 1 << 2;
const NAME_FLAG_EMBEDDED = 1 << 3;

/** Size of the kind-specific descriptor (where the uncommon type starts), by kind. */
function baseSize(kind: number, mapSize: number): number | undefined {
  switch (kind) {
    case KIND.Array: return 72;
    case KIND.Chan: return 64;
    case KIND.Func: return 56;
    case KIND.Interface: return 80;
    case KIND.Map: return mapSize;
    case KIND.Pointer: case KIND.Slice: return 56;
    case KIND.Struct: return 80;
    default: return kind >= KIND.Bool && kind <= KIND.UnsafePointer ? TYPE_HEADER : undefined;
  }
}

/** One moduledata layout, named after the first Go release that has it. */
export interface TypesLayout {
  name: string;
  /** First Go minor version (1.x) with this layout. */
  sinceMinor: number;
  types: number;
  etypes: number;
  text: number;
  /** Go 1.17–1.26. */
  typelinks?: number;
  itablinks?: number;
  /** Go 1.27+: descriptors and itabs walked in place. */
  typedesclen?: number;
  itaboffset?: number;
  itabsize?: number;
  /** Struct field offsets stored as offset<<1 | embedded (Go 1.17–1.18). */
  offsetEmbed: boolean;
  /**
   * Size of the map descriptor when it is known for every binary of the
   * layout (the old hash maps before 1.24; Swiss tables from 1.26, when the
   * old maps were removed; either in 1.24–1.25, by GOEXPERIMENT).
   */
  mapSize?: number;
  /** The kind byte holds nothing but the kind (Go 1.26+: direct-iface moved to tflag, GC programs gone). */
  pureKind: boolean;
}

/** Every layout from Go 1.17 on, oldest first. See the module documentation. */
export const TYPES_LAYOUTS: readonly TypesLayout[] = [
  { name: 'go1.17', sinceMinor: 17, text: 176, types: 280, etypes: 288, typelinks: 320, itablinks: 344, offsetEmbed: true, mapSize: 88, pureKind: false },
  { name: 'go1.18', sinceMinor: 18, text: 176, types: 280, etypes: 288, typelinks: 336, itablinks: 360, offsetEmbed: true, mapSize: 88, pureKind: false },
  { name: 'go1.19', sinceMinor: 19, text: 176, types: 280, etypes: 288, typelinks: 336, itablinks: 360, offsetEmbed: false, mapSize: 88, pureKind: false },
  { name: 'go1.20', sinceMinor: 20, text: 176, types: 296, etypes: 304, typelinks: 352, itablinks: 376, offsetEmbed: false, mapSize: 88, pureKind: false },
  { name: 'go1.24', sinceMinor: 24, text: 176, types: 296, etypes: 304, typelinks: 352, itablinks: 376, offsetEmbed: false, pureKind: false },
  { name: 'go1.26', sinceMinor: 26, text: 176, types: 296, etypes: 304, typelinks: 360, itablinks: 384, offsetEmbed: false, mapSize: 112, pureKind: true },
  { name: 'go1.27', sinceMinor: 27, text: 176, types: 296, typedesclen: 304, etypes: 312, itaboffset: 320, itabsize: 328, offsetEmbed: false, mapSize: 136, pureKind: true },
];

/** The newest Go minor version whose layout is known; newer ones are read with it, and validated. */
export const NEWEST_KNOWN_MINOR = 27;

/**
 * The layout for a Go version string from the build info (`go1.26.8`,
 * `go1.30.1`, `go1.21rc2`); undefined for versions before 1.17 or
 * unparseable ones.
 */
export function layoutFor(goVersion: string): TypesLayout | undefined {
  const m = /^go1\.(\d+)(?:[.a-z]|$|\s)/.exec(goVersion.trim());
  if (!m) return undefined;
  const minor = Number(m[1]);
  if (minor < 17) return undefined;
  let found: TypesLayout | undefined;
  for (const l of TYPES_LAYOUTS) if (l.sinceMinor <= minor) found = l;
  return found;
}

/**
 * Reads the type metadata of an opened Go binary. `pclntab` and `symbol`
 * are those the binary's function table was found with.
 *
 * @throws GoTypesError, and nothing else.
 */
export function readGoTypes(elf: ElfFile, pclntab: Pclntab, goVersion: string, symbol: SymbolLookup, layoutOverride?: TypesLayout): GoTypes {
  const path = elf.path;
  try {
    const layout = layoutOverride ?? layoutFor(goVersion);
    if (!layout) throw new GoTypesError('UNSUPPORTED_VERSION', path, `no type-descriptor layout for Go version ${JSON.stringify(goVersion)} (Go >= 1.17 only)`);
    const md = findModuledata(elf, pclntab, symbol);
    if (md === undefined) throw new GoTypesError('NO_MODULEDATA', path, 'module data not found');
    return new Reader(elf, pclntab, layout, md).read();
  } catch (err) {
    if (err instanceof GoTypesError) throw err;
    if (err instanceof GoBinaryError) {
      throw new GoTypesError(err.code === 'TRUNCATED' ? 'TRUNCATED' : 'CORRUPT', path, err.detail, { cause: err });
    }
    // A RangeError from a Buffer read or similar: still a bad binary, never a crash.
    throw new GoTypesError('CORRUPT', path, `unexpected failure: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

interface TypeInfo {
  addr: number;
  kind: number;
  size: number;
  align: number;
  tflag: number;
  /** String form (reflect's `Type.String()`). */
  str: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  readonly #elf: ElfFile;
  readonly #pclntab: Pclntab;
  readonly #layout: TypesLayout;
  readonly #md: number;
  #types = 0;
  #etypes = 0;
  #region: Buffer = Buffer.alloc(0);
  #relocs: Map<number, number> | undefined;
  readonly #infos = new Map<number, TypeInfo>();
  readonly #queue: number[] = [];
  readonly #queued = new Set<number>();
  readonly #names = new Map<number, string>();
  readonly #structs = new Map<string, GoStructType>();

  constructor(elf: ElfFile, pclntab: Pclntab, layout: TypesLayout, md: number) {
    this.#elf = elf;
    this.#pclntab = pclntab;
    this.#layout = layout;
    this.#md = md;
  }

  #fail(code: GoTypesErrorCode, detail: string): never {
    throw new GoTypesError(code, this.#elf.path, `${detail} (read with the ${this.#layout.name} layout)`);
  }

  read(): GoTypes {
    const L = this.#layout;
    const mdSize = Math.max(L.etypes, L.itablinks ?? 0, L.itabsize ?? 0) + 3 * PTR;
    const md = this.#elf.readAt(this.#md, mdSize, 'module data');
    const word = (off: number): number => this.#pointerIn(md, off, this.#md + off);
    if (this.#pclntab.textStart !== 0 && word(L.text) !== this.#pclntab.textStart) {
      this.#fail('LAYOUT', `module data text ${hex(word(L.text))} differs from the pclntab's ${hex(this.#pclntab.textStart)}`);
    }
    this.#types = word(L.types);
    this.#etypes = word(L.etypes);
    const span = this.#etypes - this.#types;
    if (this.#types === 0 || span <= 0 || span > MAX_TYPES_RANGE) {
      this.#fail('LAYOUT', `implausible type range ${hex(this.#types)}–${hex(this.#etypes)}`);
    }
    const off = this.#elf.tryFileOffset(this.#types, span);
    if (off === undefined) this.#fail('LAYOUT', `type range ${hex(this.#types)}–${hex(this.#etypes)} is not file data of one segment`);
    this.#region = this.#elf.file.read(off, span, 'type descriptors');

    if (L.typedesclen !== undefined) {
      this.#walkInPlace(word(L.typedesclen), word(L.itaboffset!), word(L.itabsize!));
    } else {
      this.#rootsFromLinks(md, L.typelinks!, L.itablinks!);
    }
    let walked = 0;
    while (this.#queue.length > 0) {
      if (++walked > MAX_TYPES) this.#fail('CORRUPT', `more than ${MAX_TYPES} type descriptors`);
      this.#visit(this.#queue.pop()!);
    }
    const structs = this.#structs;
    const layout = L.name;
    const typeCount = this.#infos.size;
    const range = { start: this.#types, end: this.#etypes };
    const moduledata = this.#md;
    return {
      layout,
      typeCount,
      range,
      moduledata,
      structs,
      fieldOffsets(wanted: readonly string[]): GoTypesFieldResult {
        const r: GoTypesFieldResult = { offsets: new Map(), absent: [], structNotFound: [] };
        for (const field of wanted) {
          const dot = field.lastIndexOf('.');
          const st = dot > 0 ? structs.get(field.slice(0, dot)) : undefined;
          if (!st) {
            r.structNotFound.push(field);
            continue;
          }
          const f = st.fields.find((x) => x.name === field.slice(dot + 1));
          if (f) r.offsets.set(field, f.offset);
          else r.absent.push(field);
        }
        return r;
      },
    };
  }

  // --- roots -------------------------------------------------------------

  #slice(md: Buffer, off: number, what: string, elemSize: number): { ptr: number; len: number } {
    const ptr = this.#pointerIn(md, off, this.#md + off);
    const len = this.#u64(md, off + 8, what);
    const cap = this.#u64(md, off + 16, what);
    if (len !== cap || len > MAX_TYPES || (len > 0 && this.#elf.tryFileOffset(ptr, len * elemSize) === undefined)) {
      this.#fail('LAYOUT', `${what}: implausible slice (${hex(ptr)}, len ${len}, cap ${cap})`);
    }
    return { ptr, len };
  }

  #rootsFromLinks(md: Buffer, typelinksOff: number, itablinksOff: number): void {
    const typelinks = this.#slice(md, typelinksOff, 'typelinks', 4);
    const itablinks = this.#slice(md, itablinksOff, 'itablinks', PTR);
    if (typelinks.len === 0) this.#fail('LAYOUT', 'no typelinks');
    const tl = this.#elf.readAt(typelinks.ptr, typelinks.len * 4, 'typelinks');
    for (let i = 0; i < typelinks.len; i++) {
      const off = tl.readInt32LE(i * 4);
      this.#enqueue(this.#types + off, `typelink ${i}`);
    }
    if (itablinks.len === 0) return;
    const il = this.#elf.readAt(itablinks.ptr, itablinks.len * PTR, 'itablinks');
    for (let i = 0; i < itablinks.len; i++) {
      const itab = this.#pointerIn(il, i * PTR, itablinks.ptr + i * PTR);
      this.#itab(itab, `itab ${i}`);
    }
  }

  /** Go 1.27+: descriptors one after the other, then itabs one after the other. */
  #walkInPlace(typedesclen: number, itaboffset: number, itabsize: number): void {
    const span = this.#etypes - this.#types;
    if (typedesclen <= PTR || typedesclen > span || itaboffset < typedesclen || itaboffset + itabsize > span) {
      this.#fail('LAYOUT', `implausible descriptor extents (typedesclen ${hex(typedesclen)}, itabs ${hex(itaboffset)}+${hex(itabsize)}, range ${hex(span)})`);
    }
    const mapSize = this.#layout.mapSize!;
    let td = this.#types + PTR;
    const end = this.#types + typedesclen;
    for (let n = 0; td < end; n++) {
      if (n > MAX_TYPES) this.#fail('CORRUPT', `more than ${MAX_TYPES} type descriptors`);
      td = alignUp(td, PTR);
      if (td >= end) break;
      const info = this.#info(td, 'type descriptor in sequence');
      this.#enqueue(td, 'type descriptor in sequence');
      const base = baseSize(info.kind, mapSize)!;
      let size = base;
      let mcount = 0;
      if (info.tflag & TFLAG_UNCOMMON) {
        size += UNCOMMON_SIZE;
        mcount = this.#u16r(td + base + 4);
      }
      switch (info.kind) {
        case KIND.Func:
          size += (this.#u16r(td + 48) + (this.#u16r(td + 50) & 0x7fff)) * PTR;
          break;
        case KIND.Interface:
          size += this.#u64r(td + 64) * IMETHOD_SIZE;
          break;
        case KIND.Struct:
          size += this.#u64r(td + 64) * STRUCT_FIELD_SIZE;
          break;
      }
      size += mcount * METHOD_SIZE;
      td += size;
    }
    let p = this.#types + itaboffset;
    const iend = p + itabsize;
    for (let n = 0; p < iend; n++) {
      if (n > MAX_TYPES) this.#fail('CORRUPT', `more than ${MAX_TYPES} itabs`);
      const inter = this.#itab(p, `itab at ${hex(p)}`);
      const fun0 = this.#ptr(p + 24);
      p += fun0 === 0 ? ITAB_HEADER : ITAB_HEADER + (Math.max(1, this.#u64r(inter + 64)) - 1) * PTR;
    }
  }

  /** Enqueues the interface and concrete type of an itab; returns the interface type's address. */
  #itab(itab: number, what: string): number {
    const inter = this.#ptrAnywhere(itab, `${what} interface`);
    const typ = this.#ptrAnywhere(itab + 8, `${what} type`);
    this.#enqueue(inter, `${what} interface`);
    this.#enqueue(typ, `${what} type`);
    if (this.#info(inter, what).kind !== KIND.Interface) this.#fail('LAYOUT', `${what}: interface type at ${hex(inter)} is not an interface`);
    return inter;
  }

  // --- descriptors -------------------------------------------------------

  #enqueue(addr: number, what: string): void {
    if (this.#queued.has(addr)) return;
    this.#info(addr, what);
    this.#queued.add(addr);
    this.#queue.push(addr);
  }

  #enqueueOff(off: number, what: string): void {
    if (off === 0 || off === -1) return;
    this.#enqueue(this.#types + off, what);
  }

  /** Parses and validates a descriptor's header (cached). */
  #info(addr: number, what: string): TypeInfo {
    const hit = this.#infos.get(addr);
    if (hit) return hit;
    if (addr < this.#types || addr + TYPE_HEADER > this.#etypes || addr % PTR !== 0) {
      this.#fail('LAYOUT', `${what}: type descriptor address ${hex(addr)} outside the type range ${hex(this.#types)}–${hex(this.#etypes)} or misaligned`);
    }
    const o = addr - this.#types;
    const r = this.#region;
    const size = this.#u64(r, o, 'type size');
    const ptrdata = this.#u64(r, o + 8, 'type ptrdata');
    const tflag = r[o + 20]!;
    const align = r[o + 21]!;
    const fieldAlign = r[o + 22]!;
    const kindByte = r[o + 23]!;
    const kind = kindByte & 0x1f;
    const where = `${what}: type at ${hex(addr)}`;
    if (kind < KIND.Bool || kind > KIND.UnsafePointer || (this.#layout.pureKind && kindByte !== kind)) {
      this.#fail('LAYOUT', `${where}: invalid kind byte ${hex(kindByte)}`);
    }
    if (!isAlignment(align) || !isAlignment(fieldAlign) || size % align !== 0 || ptrdata > size) {
      this.#fail('LAYOUT', `${where}: implausible size ${size}, ptrdata ${ptrdata}, align ${align}/${fieldAlign}`);
    }
    let str = this.#nameAt(this.#types + r.readInt32LE(o + 40), `${where} name`).name;
    if (tflag & TFLAG_EXTRA_STAR) {
      if (!str.startsWith('*')) this.#fail('LAYOUT', `${where}: name ${JSON.stringify(str)} lacks the extra star its flags announce`);
      str = str.slice(1);
    }
    const info: TypeInfo = { addr, kind, size, align, tflag, str };
    this.#infos.set(addr, info);
    return info;
  }

  #visit(addr: number): void {
    const t = this.#infos.get(addr)!;
    const what = `type ${t.str}`;
    this.#enqueueOff(this.#region.readInt32LE(addr - this.#types + 44), `${what} pointer type`);
    let params = 0;
    switch (t.kind) {
      case KIND.Pointer:
      case KIND.Slice:
      case KIND.Chan:
        this.#enqueue(this.#ptr(addr + 48), `${what} element`);
        break;
      case KIND.Array:
        this.#enqueue(this.#ptr(addr + 48), `${what} element`);
        this.#enqueue(this.#ptr(addr + 56), `${what} slice type`);
        break;
      case KIND.Map:
        this.#enqueue(this.#ptr(addr + 48), `${what} key`);
        this.#enqueue(this.#ptr(addr + 56), `${what} element`);
        break;
      case KIND.Func:
        params = this.#u16r(addr + 48) + (this.#u16r(addr + 50) & 0x7fff);
        break;
      case KIND.Interface: {
        const ptr = this.#ptr(addr + 56);
        const len = this.#u64r(addr + 64);
        if (len !== this.#u64r(addr + 72) || (len > 0 && (ptr < this.#types || ptr + len * IMETHOD_SIZE > this.#etypes))) {
          this.#fail('LAYOUT', `${what}: implausible method table (${hex(ptr)}, ${len})`);
        }
        for (let i = 0; i < len; i++) this.#enqueueOff(this.#region.readInt32LE(ptr - this.#types + i * IMETHOD_SIZE + 4), `${what} method ${i}`);
        break;
      }
      case KIND.Struct:
        this.#struct(t);
        break;
    }
    const base = baseSize(t.kind, this.#layout.mapSize ?? 0)!;
    let uncommonSize = 0;
    // Methods of named map types are left alone: in Go 1.24–1.25 the map
    // descriptor's size depends on GOEXPERIMENT, which the binary does not record.
    if (t.tflag & TFLAG_UNCOMMON && (t.kind !== KIND.Map || this.#layout.mapSize !== undefined)) {
      uncommonSize = UNCOMMON_SIZE;
      const u = addr + base;
      const mcount = this.#u16r(u + 4);
      const moff = this.#u32r(u + 8);
      if (mcount > 0) {
        if (u + moff + mcount * METHOD_SIZE > this.#etypes || moff < UNCOMMON_SIZE) this.#fail('LAYOUT', `${what}: method table beyond the type range`);
        for (let i = 0; i < mcount; i++) this.#enqueueOff(this.#i32r(u + moff + i * METHOD_SIZE + 4), `${what} method ${i}`);
      }
    }
    if (params > 0) {
      const p = addr + base + uncommonSize;
      for (let i = 0; i < params; i++) this.#enqueue(this.#ptr(p + i * PTR), `${what} parameter ${i}`);
    }
  }

  #struct(t: TypeInfo): void {
    const addr = t.addr;
    const what = `struct ${t.str}`;
    const ptr = this.#ptr(addr + 56);
    const len = this.#u64r(addr + 64);
    if (len !== this.#u64r(addr + 72) || (len > 0 && (ptr < this.#types || ptr + len * STRUCT_FIELD_SIZE > this.#etypes))) {
      this.#fail('LAYOUT', `${what}: implausible field table (${hex(ptr)}, ${len})`);
    }
    const fields: GoStructField[] = [];
    let prev = 0;
    for (let i = 0; i < len; i++) {
      const f = ptr + i * STRUCT_FIELD_SIZE;
      const name = this.#nameAt(this.#ptr(f), `${what} field ${i} name`);
      const ftype = this.#ptr(f + 8);
      this.#enqueue(ftype, `${what} field ${name.name}`);
      const ft = this.#infos.get(ftype)!;
      let offset = this.#u64r(f + 16);
      let embedded = name.embedded;
      if (this.#layout.offsetEmbed) {
        embedded = offset % 2 === 1;
        offset = Math.floor(offset / 2);
      }
      if (name.name === '' || offset < prev || offset + ft.size > t.size || offset % ft.align !== 0) {
        this.#fail('LAYOUT', `${what} (size ${t.size}): field ${JSON.stringify(name.name)} of type ${ft.str} (size ${ft.size}, align ${ft.align}) at offset ${offset} does not fit`);
      }
      prev = offset;
      fields.push({ name: name.name, offset, type: ft.str, size: ft.size, embedded });
    }
    if (!(t.tflag & TFLAG_NAMED) || !(t.tflag & TFLAG_UNCOMMON)) return;
    const pkgPath = this.#nameAt(this.#types + this.#i32r(addr + 80), `${what} package path`).name;
    const dot = t.str.indexOf('.');
    if (pkgPath === '' || dot <= 0) return;
    const name = `${pkgPath}.${t.str.slice(dot + 1)}`;
    this.#structs.set(name, { name, pkgPath, size: t.size, align: t.align, fields });
  }

  // --- names -------------------------------------------------------------

  #nameAt(addr: number, what: string): { name: string; embedded: boolean } {
    const o = addr - this.#types;
    const r = this.#region;
    if (o < 0 || o + 2 > r.length) this.#fail('LAYOUT', `${what}: name address ${hex(addr)} outside the type range`);
    const flags = r[o]!;
    if (flags & 0xf0) this.#fail('LAYOUT', `${what}: name flags ${hex(flags)} at ${hex(addr)}`);
    let len = 0;
    let pos = o + 1;
    for (let i = 0; ; i++) {
      if (i >= 4 || pos >= r.length) this.#fail('LAYOUT', `${what}: bad name length at ${hex(addr)}`);
      const b = r[pos++]!;
      len += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) break;
    }
    if (pos + len > r.length) this.#fail('LAYOUT', `${what}: name at ${hex(addr)} runs past the type range`);
    const embedded = !this.#layout.offsetEmbed && (flags & NAME_FLAG_EMBEDDED) !== 0;
    const cached = this.#names.get(addr);
    if (cached !== undefined) return { name: cached, embedded };
    let name: string;
    try {
      name = utf8.decode(r.subarray(pos, pos + len));
    } catch {
      this.#fail('LAYOUT', `${what}: name at ${hex(addr)} is not valid UTF-8`);
    }
    this.#names.set(addr, name);
    return { name, embedded };
  }

  // --- raw reads ---------------------------------------------------------

  #u64(buf: Buffer, pos: number, what: string): number {
    if (pos < 0 || pos + 8 > buf.length) this.#fail('LAYOUT', `${what}: read outside the data`);
    const lo = buf.readUInt32LE(pos);
    const hi = buf.readUInt32LE(pos + 4);
    if (hi >= 0x200000) this.#fail('LAYOUT', `${what}: value ${hex(buf.readBigUInt64LE(pos))} out of range`);
    return hi * 0x100000000 + lo;
  }

  #regionPos(addr: number, n: number): number {
    const o = addr - this.#types;
    if (o < 0 || o + n > this.#region.length) this.#fail('LAYOUT', `read of ${n} bytes at ${hex(addr)} outside the type range`);
    return o;
  }

  #u64r(addr: number): number {
    return this.#u64(this.#region, this.#regionPos(addr, 8), `value at ${hex(addr)}`);
  }

  #u32r(addr: number): number {
    return this.#region.readUInt32LE(this.#regionPos(addr, 4));
  }

  #i32r(addr: number): number {
    return this.#region.readInt32LE(this.#regionPos(addr, 4));
  }

  #u16r(addr: number): number {
    return this.#region.readUInt16LE(this.#regionPos(addr, 2));
  }

  /** A pointer stored in the type range. */
  #ptr(addr: number): number {
    return this.#pointerIn(this.#region, this.#regionPos(addr, 8), addr);
  }

  /** A pointer stored anywhere in the file's loaded data. */
  #ptrAnywhere(addr: number, what: string): number {
    if (addr >= this.#types && addr + 8 <= this.#etypes) return this.#ptr(addr);
    const buf = this.#elf.readAt(addr, 8, what);
    return this.#pointerIn(buf, 0, addr);
  }

  /**
   * The pointer at `buf[pos]`, stored at virtual address `vaddr`. A
   * position-independent binary may leave it zero on disk for the dynamic
   * linker to fill in from an R_X86_64_RELATIVE relocation (external linkers
   * do): then the relocation's addend is the value.
   */
  #pointerIn(buf: Buffer, pos: number, vaddr: number): number {
    const v = this.#u64(buf, pos, `pointer at ${hex(vaddr)}`);
    if (v !== 0 || !this.#elf.isPositionIndependent) return v;
    this.#relocs ??= this.#elf.relativeRelocations();
    return this.#relocs.get(vaddr) ?? 0;
  }
}

function isAlignment(a: number): boolean {
  return a > 0 && a <= 64 && (a & (a - 1)) === 0;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
