/**
 * Builds small DWARF sections by hand, to test encodings that Go does not
 * emit today but other producers (and older or newer Go) may: exprloc member
 * locations, strx/strp/line_strp names, implicit_const, DW_AT_sibling,
 * 64-bit DWARF, big-endian targets.
 */

/** Constants used by the tests (DWARF 5, section 7). */
export const DW = {
  TAG_compile_unit: 0x11, TAG_structure_type: 0x13, TAG_member: 0x0d, TAG_base_type: 0x24, TAG_subprogram: 0x2e,
  TAG_variable: 0x34,
  AT_sibling: 0x01, AT_name: 0x03, AT_byte_size: 0x0b, AT_language: 0x13, AT_data_member_location: 0x38,
  AT_str_offsets_base: 0x72, AT_type: 0x49,
  FORM_addr: 0x01, FORM_data1: 0x0b, FORM_data2: 0x05, FORM_data4: 0x06, FORM_data8: 0x07, FORM_string: 0x08,
  FORM_block1: 0x0a, FORM_udata: 0x0f, FORM_sdata: 0x0d, FORM_strp: 0x0e, FORM_ref4: 0x13, FORM_ref_addr: 0x10,
  FORM_sec_offset: 0x17, FORM_exprloc: 0x18, FORM_flag_present: 0x19, FORM_strx1: 0x25, FORM_line_strp: 0x1f,
  FORM_implicit_const: 0x21, FORM_data16: 0x1e, FORM_indirect: 0x16,
  LANG_Go: 0x16, LANG_C11: 0x1d,
  OP_plus_uconst: 0x23,
} as const;

/** A growable byte sink with DWARF encodings. */
export class Bytes {
  private readonly out: number[] = [];
  readonly bigEndian: boolean;

  constructor(bigEndian = false) {
    this.bigEndian = bigEndian;
  }

  get length(): number {
    return this.out.length;
  }

  u8(v: number): this {
    this.out.push(v & 0xff);
    return this;
  }

  private int(v: number, n: number): this {
    const bytes: number[] = [];
    let x = BigInt(v);
    for (let i = 0; i < n; i++) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
    }
    this.out.push(...(this.bigEndian ? bytes.reverse() : bytes));
    return this;
  }

  u16(v: number): this {
    return this.int(v, 2);
  }

  u32(v: number): this {
    return this.int(v, 4);
  }

  u64(v: number): this {
    return this.int(v, 8);
  }

  uleb(v: number): this {
    let x = BigInt(v);
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x !== 0n) b |= 0x80;
      this.out.push(b);
    } while (x !== 0n);
    return this;
  }

  sleb(v: number): this {
    let x = BigInt(v);
    for (;;) {
      const b = Number(x & 0x7fn);
      x >>= 7n;
      const done = (x === 0n && (b & 0x40) === 0) || (x === -1n && (b & 0x40) !== 0);
      this.out.push(done ? b : b | 0x80);
      if (done) return this;
    }
  }

  str(s: string): this {
    this.out.push(...Buffer.from(s, 'utf8'), 0);
    return this;
  }

  bytes(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.out.push(b[i]!);
    return this;
  }

  /** Overwrites a 4-byte value written earlier (for forward references). */
  patchU32(at: number, v: number): void {
    const b = new Bytes(this.bigEndian).u32(v).buffer();
    for (let i = 0; i < 4; i++) this.out[at + i] = b[i]!;
  }

  buffer(): Buffer {
    return Buffer.from(this.out);
  }
}

/** One abbreviation: code, tag, children flag, attribute specs ([attr, form] or [attr, implicit_const, value]). */
export type AbbrevSpec = [code: number, tag: number, children: boolean, attrs: Array<[number, number] | [number, number, number]>];

/** Encodes an abbreviation table. */
export function abbrevTable(specs: AbbrevSpec[], bigEndian = false): Bytes {
  const b = new Bytes(bigEndian);
  for (const [code, tag, children, attrs] of specs) {
    b.uleb(code).uleb(tag).u8(children ? 1 : 0);
    for (const a of attrs) {
      b.uleb(a[0]).uleb(a[1]);
      if (a[1] === DW.FORM_implicit_const) b.sleb(a[2] ?? 0);
    }
    b.uleb(0).uleb(0);
  }
  return b.u8(0);
}

/** Unit header options. */
export interface UnitOptions {
  version: 2 | 3 | 4 | 5;
  /** 64-bit DWARF (unit_length escape 0xffffffff). Default false. */
  dwarf64?: boolean;
  abbrevOffset?: number;
  bigEndian?: boolean;
  /** DWARF 5 unit type. Default DW_UT_compile (1). */
  unitType?: number;
}

/**
 * Wraps DIE bytes into a unit. `body` receives the offset at which the first
 * DIE will sit (relative to the unit start), for unit-relative references.
 */
export function unit(o: UnitOptions, body: (dieStart: number) => Bytes): Bytes {
  const be = o.bigEndian ?? false;
  const off = o.dwarf64 === true ? 8 : 4;
  const lengthField = o.dwarf64 === true ? 12 : 4;
  let headerRest: number;
  if (o.version >= 5) headerRest = 2 + 1 + 1 + off + (o.unitType === 2 ? 8 + off : 0);
  else headerRest = 2 + off + 1;
  const dies = body(lengthField + headerRest);
  const b = new Bytes(be);
  const length = headerRest + dies.length;
  if (o.dwarf64 === true) b.u32(0xffffffff).u64(length);
  else b.u32(length);
  b.u16(o.version);
  const abbrevOffset = o.abbrevOffset ?? 0;
  const offset = (v: number): void => {
    if (off === 8) b.u64(v);
    else b.u32(v);
  };
  if (o.version >= 5) {
    b.u8(o.unitType ?? 1).u8(8);
    offset(abbrevOffset);
    if (o.unitType === 2) {
      b.u64(0x1234);
      offset(0);
    }
  } else {
    offset(abbrevOffset);
    b.u8(8);
  }
  return b.bytes(dies.buffer());
}
