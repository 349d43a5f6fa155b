/**
 * Chooses the span exporter: OTLP over HTTP/protobuf (honouring the standard
 * OTEL_EXPORTER_OTLP_* variables, read by the OpenTelemetry exporter itself),
 * the console trace-tree printer, or none.
 */
import { OtlpProtoTraceExporter } from './otlp-exporter.ts';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ConsoleTreeExporter } from './console-tree.ts';

export type ExporterKind = 'otlp' | 'console' | 'none';

export interface ExporterOptions {
  kind: ExporterKind;
  /** OTLP traces URL; default from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318/v1/traces. */
  endpoint?: string;
  /** Extra HTTP headers (merged over OTEL_EXPORTER_OTLP_HEADERS). */
  headers?: Record<string, string>;
  /** ms a request may take; default from OTEL_EXPORTER_OTLP_TIMEOUT, else 10000. */
  timeoutMillis?: number;
}

class NoopExporter implements SpanExporter {
  export(_spans: unknown[], done: (r: { code: number }) => void): void {
    done({ code: 0 });
  }
  async shutdown(): Promise<void> {}
}

export function createExporter(opts: ExporterOptions): SpanExporter {
  switch (opts.kind) {
    case 'otlp':
      return new OtlpProtoTraceExporter({
        ...(opts.endpoint ? { url: opts.endpoint } : {}),
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.timeoutMillis !== undefined ? { timeoutMillis: opts.timeoutMillis } : {}),
      });
    case 'console':
      return new ConsoleTreeExporter();
    case 'none':
      return new NoopExporter();
  }
}
