/**
 * Spans say which semantic conventions their attribute keys follow: the
 * version of @opentelemetry/semantic-conventions the keys come from.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SpanKind } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SEMCONV_SCHEMA_URL } from '../../daemon/spans/resource.ts';
import { makeSpan } from '../../daemon/spans/span-record.ts';

test('the schema URL is that of the installed semantic-conventions package (versioned after the conventions)', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../node_modules/@opentelemetry/semantic-conventions/package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(SEMCONV_SCHEMA_URL, `https://opentelemetry.io/schemas/${pkg.version}`, 'update SEMCONV_SCHEMA_URL (daemon/spans/resource.ts) with the dependency');
});

test("every span's instrumentation scope carries the schema URL", () => {
  const span = makeSpan({
    name: 'GET', kind: SpanKind.SERVER, traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), sampled: true,
    startUnixNano: 1n, endUnixNano: 2n, attributes: {}, status: { code: 0 }, resource: resourceFromAttributes({}), scope: 'net/http',
  });
  assert.deepEqual(span.instrumentationScope, { name: 'gotrail/net/http', version: '0.1.0', schemaUrl: 'https://opentelemetry.io/schemas/1.45.0' });
});

test('the unstable conventions copied into daemon/spans/semconv.ts equal those of the installed package', async () => {
  const copied = await import('../../daemon/spans/semconv.ts');
  const incubating = (await import('@opentelemetry/semantic-conventions/incubating')) as Record<string, unknown>;
  const names = Object.keys(copied);
  assert.ok(names.length >= 20);
  for (const name of names) assert.equal((copied as Record<string, unknown>)[name], incubating[name], name);
});
