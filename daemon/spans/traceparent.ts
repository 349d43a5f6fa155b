/**
 * W3C Trace Context `traceparent` parsing (version 00 and, per the spec's
 * forward-compatibility rule, later versions read as 00).
 */
export interface TraceParent {
  traceId: string;   // 32 lower-case hex
  spanId: string;    // 16 lower-case hex
  sampled: boolean;
}

const HEX = /^[0-9a-f]+$/;

/** Parses a header value; returns undefined for anything malformed. Trailing bytes after the 55 characters are ignored when they start with a separator (probes copy a fixed window). */
export function parseTraceParent(value: string): TraceParent | undefined {
  const v = value.trim().toLowerCase();
  if (v.length < 55) return undefined;
  const version = v.slice(0, 2);
  if (!HEX.test(version) || version === 'ff') return undefined;
  if (v[2] !== '-' || v[35] !== '-' || v[52] !== '-') return undefined;
  const traceId = v.slice(3, 35);
  const spanId = v.slice(36, 52);
  const flags = v.slice(53, 55);
  if (!HEX.test(traceId) || !HEX.test(spanId) || !HEX.test(flags)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  if (version === '00' && v.length > 55 && !/[\r\n\s,;]/.test(v[55]!)) return undefined;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

/** Extracts the header value from a fixed-size window copied by a probe (ends at CR, LF or NUL). */
export function traceParentFromWindow(window: Buffer): TraceParent | undefined {
  let end = window.indexOf(0x0d);
  const lf = window.indexOf(0x0a);
  const nul = window.indexOf(0x00);
  for (const i of [lf, nul]) if (i >= 0 && (end < 0 || i < end)) end = i;
  return parseTraceParent(window.subarray(0, end < 0 ? window.length : end).toString('latin1'));
}
