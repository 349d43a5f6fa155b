/**
 * Where the gRPC server probe finds the HTTP/2 frame of a call's headers:
 * `http2Server.operateHeaders` takes a context first from grpc v1.60.0
 * (v1.59.0 is the last without), which the probe learns from the binary's
 * module version; without one, the newest shape.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { operateHeadersTakesContext } from '../../../../daemon/probes/go/google.golang.org/grpc/server/descriptor.ts';

test('operateHeaders takes a context from grpc v1.60.0', () => {
  for (const v of ['v1.20.0', 'v1.50.1', 'v1.59.0', 'v1.59.1-0.20231115185011-c1e8f1bd0b31']) assert.equal(operateHeadersTakesContext(v), false, v);
  for (const v of ['v1.60.0', 'v1.60.0-dev', 'v1.64.1', 'v1.85.0', 'v1.86.0-dev', 'v2.0.0']) assert.equal(operateHeadersTakesContext(v), true, v);
  // no readable version (a local checkout): the newest shape
  assert.equal(operateHeadersTakesContext(undefined), true);
  assert.equal(operateHeadersTakesContext('(devel)'), true);
});
