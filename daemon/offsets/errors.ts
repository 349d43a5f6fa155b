/**
 * Raised for any malformed or unsupported input met while reading ELF section
 * headers or DWARF: truncated data, lengths that point past the end, absurd
 * counts, unknown abbreviation codes or forms. Callers treat it as "this
 * binary's DWARF cannot be used" and fall back to the offsets database; it is
 * never a reason to crash the agent.
 */
export class DwarfError extends Error {
  /** Section being read, e.g. `.debug_info` or `ELF section headers`. */
  readonly section: string;
  /** Byte offset inside that section (or file, for ELF headers) where decoding failed. */
  readonly offset: number;

  constructor(section: string, offset: number, message: string, options?: { cause?: unknown }) {
    super(`malformed ${section} at offset 0x${offset.toString(16)}: ${message}`, options);
    this.name = 'DwarfError';
    this.section = section;
    this.offset = offset;
  }
}
