/**
 * Signatures that changed between grpc versions, told apart by the binary's
 * module version. Where the gRPC server probe finds the HTTP/2 frame of a call's headers:
 * `http2Server.operateHeaders` takes a context first from grpc v1.60.0
 * (v1.59.0 is the last without), which the probe learns from the binary's
 * module version; without one, the newest shape. And where the client
 * probe finds a new stream's headers on the connection's writer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { operateHeadersTakesContext } from '../../../../daemon/probes/go/google.golang.org/grpc/server/descriptor.ts';
import { clientHeadersWhere } from '../../../../daemon/probes/go/google.golang.org/grpc/client/descriptor.ts';
import { GrpcClientHdrWhere } from '../../../../daemon/generated/layouts.ts';

test('operateHeaders takes a context from grpc v1.60.0', () => {
  for (const v of ['v1.20.0', 'v1.50.1', 'v1.59.0', 'v1.59.1-0.20231115185011-c1e8f1bd0b31']) assert.equal(operateHeadersTakesContext(v), false, v);
  for (const v of ['v1.60.0', 'v1.60.0-dev', 'v1.64.1', 'v1.85.0', 'v1.86.0-dev', 'v2.0.0']) assert.equal(operateHeadersTakesContext(v), true, v);
  // no readable version (a local checkout): the newest shape
  assert.equal(operateHeadersTakesContext(undefined), true);
  assert.equal(operateHeadersTakesContext('(devel)'), true);
});

test("the client probe finds a new stream's headers where its version's writer is given them", () => {
  const { GT_GRPC_CLIENT_HDR_ARG2: arg2, GT_GRPC_CLIENT_HDR_ARG3: arg3, GT_GRPC_CLIENT_HDR_STR_ITEM: item } = GrpcClientHdrWhere;
  assert.equal(clientHeadersWhere(true, 'v1.85.0'), arg2, 'clientHeaderHandler(hdr)');
  assert.equal(clientHeadersWhere(true, 'v1.82.1'), arg2);
  for (const v of ['v1.53.0', 'v1.64.1', 'v1.82.0', 'v1.84.0-dev', undefined]) assert.equal(clientHeadersWhere(false, v), arg3, `originateStream(str, hdr) at ${v}`);
  for (const v of ['v1.20.0', 'v1.50.1', 'v1.52.0']) assert.equal(clientHeadersWhere(false, v), item, `originateStream(str) at ${v}`);
});
