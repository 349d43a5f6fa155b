/**
 * A span exporter that prints readable trace trees: the demo's default and a
 * quick way to see what the agent sees without a collector. Spans of one
 * trace often arrive in several batches (one per process), so a trace is
 * printed once it has been quiet for `settleMs`.
 */
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';

const KIND = ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
/** gRPC status codes by number (google.golang.org/grpc/codes). */
const GRPC_CODE = ['OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists', 'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange', 'Unimplemented', 'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated'];

function ms(span: ReadableSpan): string {
  const [s, ns] = span.duration;
  return `${(s * 1e3 + ns / 1e6).toFixed(2)} ms`;
}

function describe(span: ReadableSpan): string {
  const a = span.attributes;
  const svc = String(span.resource.attributes['service.name'] ?? '?');
  const pid = span.resource.attributes['process.pid'];
  const parts = [span.name];
  if (a['url.path'] !== undefined) parts.push(String(a['url.path']));
  else if (a['url.full'] !== undefined) parts.push(String(a['url.full']));
  parts.push(KIND[span.kind] ?? String(span.kind));
  if (a['http.response.status_code'] !== undefined) parts.push(String(a['http.response.status_code']));
  const grpc = a['rpc.grpc.status_code'];
  if (typeof grpc === 'number') parts.push(GRPC_CODE[grpc] ?? `code ${grpc}`);
  parts.push(ms(span));
  if (span.status.code === SpanStatusCode.ERROR) parts.push('ERROR');
  return `${parts.join('  ')}   [${svc} pid ${String(pid)}]`;
}

export function renderTrace(spans: ReadableSpan[]): string {
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  const children = new Map<string, ReadableSpan[]>();
  const roots: ReadableSpan[] = [];
  for (const s of spans) {
    const p = s.parentSpanContext?.spanId;
    if (p && byId.has(p)) {
      const list = children.get(p) ?? [];
      list.push(s);
      children.set(p, list);
    } else roots.push(s);
  }
  const start = (s: ReadableSpan): number => s.startTime[0] * 1e9 + s.startTime[1];
  const lines = [`trace ${spans[0]?.spanContext().traceId}`];
  const walk = (s: ReadableSpan, prefix: string, last: boolean): void => {
    const remote = s.parentSpanContext && !byId.has(s.parentSpanContext.spanId)
      ? `   (parent ${s.parentSpanContext.spanId}${s.parentSpanContext.isRemote ? ', remote' : ''})`
      : '';
    lines.push(`${prefix}${last ? '└─ ' : '├─ '}${describe(s)}${remote}`);
    const kids = (children.get(s.spanContext().spanId) ?? []).sort((a, b) => start(a) - start(b));
    kids.forEach((k, i) => walk(k, prefix + (last ? '   ' : '│  '), i === kids.length - 1));
  };
  roots.sort((a, b) => start(a) - start(b)).forEach((r, i, all) => walk(r, '', i === all.length - 1));
  return lines.join('\n');
}

export class ConsoleTreeExporter implements SpanExporter {
  /** where the spans go (for the log) */
  readonly destination = 'stdout';
  private pending = new Map<string, { spans: ReadableSpan[]; timer: NodeJS.Timeout }>();

  private readonly write: (text: string) => void;
  private readonly settleMs: number;

  constructor(write: (text: string) => void = (t) => void process.stdout.write(t), settleMs = 300) {
    this.write = write;
    this.settleMs = settleMs;
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    for (const s of spans) {
      const id = s.spanContext().traceId;
      const entry = this.pending.get(id);
      if (entry) {
        entry.spans.push(s);
        entry.timer.refresh();
      } else {
        const timer = setTimeout(() => this.print(id), this.settleMs);
        this.pending.set(id, { spans: [s], timer });
      }
    }
    done({ code: ExportResultCode.SUCCESS });
  }

  private print(traceId: string): void {
    const entry = this.pending.get(traceId);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.pending.delete(traceId);
    this.write(renderTrace(entry.spans) + '\n\n');
  }

  forceFlush(): Promise<void> {
    for (const id of [...this.pending.keys()]) this.print(id);
    return Promise.resolve();
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
  }
}

export { SpanKind };
