import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { fromRpc } from "../src/errors.js";
import { StPeterError, UnavailableError } from "../src/index.js";

function nodeError(code: string): Error {
  return Object.assign(new Error(`read ${code}`), { code });
}

test("a connection that failed on this side is unavailable, whatever code connect gave it", () => {
  // What connect-node makes of a reset connection, and of errors it cannot classify.
  for (const code of [Code.Aborted, Code.Internal, Code.Unknown]) {
    const error = fromRpc(new ConnectError("read ECONNRESET", code, undefined, undefined, nodeError("ECONNRESET")));
    assert.ok(error instanceof UnavailableError, `${Code[code]}: ${String(error)}`);
    assert.equal(error.code, Code.Unavailable);
  }
});

test("the same codes sent by st-peter stay what they are", () => {
  for (const code of [Code.Aborted, Code.Internal, Code.Unknown]) {
    const error = fromRpc(new ConnectError("from the server", code));
    assert.ok(error instanceof StPeterError && !(error instanceof UnavailableError), String(error));
    assert.equal(error.kind, "status");
    assert.equal(error.code, code);
  }
});
