// The service token's life in the client, for the faults a real server cannot be made to
// produce on cue: an exchange that cannot reach st-peter while the old token still has time
// left, and one answer racing another. (service.test.ts runs the rest against the binary.)
import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";

import { Code } from "@connectrpc/connect";

import { ApiKeyRejectedError, InvalidArgumentError, StPeterError, UnavailableError } from "../src/errors.js";
import { ServiceIdentity } from "../src/identity.js";
import type { Authenticated } from "../src/model.js";
import { MovableClock } from "./harness.js";

const KEY = "stk_the-key-itself";

/** An ExchangeApiKey stand-in: answers tokens of 3 s by the clock, or what `fail` says. */
function exchanger(clock: MovableClock) {
  const state = { calls: 0, fail: undefined as StPeterError | undefined };
  const exchange = async (apiKey: string): Promise<Authenticated> => {
    assert.equal(apiKey, KEY);
    state.calls++;
    await new Promise((resolve) => setImmediate(resolve));
    if (state.fail) {
      throw state.fail;
    }
    return {
      kind: "authenticated",
      token: `stp_${state.calls}`,
      expiresAt: new Date(clock.now() + 3_000),
      user: { userId: "svc", handle: "billing", displayName: "", disabled: false, kind: "service" },
    };
  };
  return { state, exchange };
}

test("a refresh that cannot reach st-peter keeps the old token until it expires", async () => {
  const clock = new MovableClock();
  const { state, exchange } = exchanger(clock);
  const identity = new ServiceIdentity(KEY, { exchange, now: clock.now });
  assert.equal((await identity.token()).token, "stp_1");
  clock.advance(2_500);
  state.fail = new UnavailableError("unavailable", Code.Unavailable, "connection refused");
  assert.equal((await identity.token()).token, "stp_1");
  clock.advance(600); // past its expiry
  await assert.rejects(identity.token(), UnavailableError);
  state.fail = undefined;
  assert.equal((await identity.token()).token, "stp_4");
});

test("a refused key is answered for a second without asking again; a malformed key is a refused key", async () => {
  const clock = new MovableClock();
  const { state, exchange } = exchanger(clock);
  const identity = new ServiceIdentity(KEY, { exchange, now: clock.now });
  state.fail = new InvalidArgumentError("invalid_argument", Code.InvalidArgument, "api_key: must not be empty");
  for (let i = 0; i < 3; i++) {
    await assert.rejects(identity.token(), (error: unknown) => {
      assert.ok(error instanceof ApiKeyRejectedError, String(error));
      assert.equal(error.code, Code.InvalidArgument);
      return true;
    });
  }
  assert.equal(state.calls, 1);
  clock.advance(1_000);
  state.fail = undefined;
  assert.equal((await identity.token()).token, "stp_2");
});

test("a refusal of a token already replaced does not drop the new one", async () => {
  const clock = new MovableClock();
  const { state, exchange } = exchanger(clock);
  const identity = new ServiceIdentity(KEY, { exchange, now: clock.now });
  const first = await identity.token();
  identity.drop(first);
  const second = await identity.token();
  identity.drop(first); // a late refusal of the first
  assert.equal(await identity.token(), second);
  assert.equal(state.calls, 2);
});

test("a call refused for its caller credentials is retried once with a new token, other errors not at all", async () => {
  const clock = new MovableClock();
  const { state, exchange } = exchanger(clock);
  const identity = new ServiceIdentity(KEY, { exchange, now: clock.now });
  const refused = new StPeterError("permission_denied", Code.PermissionDenied, "caller credentials: token expired");
  const sent: string[] = [];
  await assert.rejects(
    identity.call(async (service) => {
      sent.push(service.token);
      throw refused;
    }),
    (error: unknown) => error === refused,
  );
  assert.deepEqual(sent, ["stp_1", "stp_2"]);
  const other = new StPeterError("permission_denied", Code.PermissionDenied, "lookup needs st-peter:lookup");
  await assert.rejects(
    identity.call(async (service) => {
      sent.push(service.token);
      throw other;
    }),
    (error: unknown) => error === other,
  );
  assert.deepEqual(sent, ["stp_1", "stp_2", "stp_2"]);
  assert.equal(state.calls, 2);
  assert.doesNotMatch(`${inspect(identity, { showHidden: true })} ${JSON.stringify(identity)}`, /stk_|stp_/);
});
