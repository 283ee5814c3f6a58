import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { callerCredentialsRefused, fromExchange, fromRpc } from "../src/errors.js";
import {
  ApiKeyRejectedError,
  InvalidTokenError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  StPeterError,
  UnavailableError,
} from "../src/index.js";

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

test("account call refusals map onto their own kinds, keeping st-peter's message", () => {
  const cases = [
    [Code.PermissionDenied, "permission_denied", PermissionDeniedError],
    [Code.FailedPrecondition, "failed_precondition", FailedPreconditionError],
    [Code.ResourceExhausted, "rate_limited", RateLimitedError],
    [Code.NotFound, "not_found", NotFoundError],
    [Code.InvalidArgument, "invalid_argument", InvalidArgumentError],
  ] as const;
  for (const [code, kind, type] of cases) {
    const error = fromRpc(new ConnectError("current_password: is wrong", code));
    assert.ok(error instanceof type && error instanceof StPeterError, `${Code[code]}: ${String(error)}`);
    assert.equal(error.kind, kind);
    assert.equal(error.code, code);
    assert.equal(error.detail, "current_password: is wrong");
    assert.match(error.message, /current_password: is wrong$/);
  }
});

test("an exchange refused as UNAUTHENTICATED is about the API key, never an invalid token", () => {
  const refused = fromExchange(new ConnectError("api key is not valid", Code.Unauthenticated));
  assert.ok(refused instanceof ApiKeyRejectedError && !(refused instanceof InvalidTokenError), String(refused));
  assert.equal(refused.kind, "api_key_rejected");
  assert.equal(refused.message, "api key rejected: api key is not valid");
  assert.ok(fromExchange(new ConnectError("slow down", Code.ResourceExhausted)) instanceof RateLimitedError);
  assert.ok(fromRpc(new ConnectError("x", Code.Unauthenticated)) instanceof InvalidTokenError);
});

test("only a PERMISSION_DENIED that starts with `caller credentials:` refuses the caller", () => {
  assert.ok(callerCredentialsRefused(new ConnectError("caller credentials: missing", Code.PermissionDenied)));
  assert.ok(callerCredentialsRefused(fromRpc(new ConnectError("caller credentials: expired", Code.PermissionDenied))));
  assert.ok(!callerCredentialsRefused(new ConnectError("needs st-peter:lookup", Code.PermissionDenied)));
  assert.ok(!callerCredentialsRefused(new ConnectError("caller credentials: missing", Code.Unauthenticated)));
});
