import assert from "node:assert/strict";
import { test } from "node:test";

import { connect, InvalidTokenError, UnavailableError, type Authenticated } from "../src/index.js";
import { freeAddress, TestServer } from "./harness.js";

test("nothing listening is unavailable, for every method, and is not cached", async () => {
  const client = connect(`http://${await freeAddress()}`, { requestTimeoutMs: 2_000 });
  try {
    const isUnavailable = (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.ok(!(error instanceof InvalidTokenError));
      assert.equal(error.kind, "unavailable");
      return true;
    };
    await assert.rejects(client.verifyToken("stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), isUnavailable);
    await assert.rejects(client.login("cashier", "knock knock, who goes there"), isUnavailable);
    await assert.rejects(client.verifyTwoFactor("stc_x", "123456"), isUnavailable);
    await assert.rejects(client.lookupUser("a", "b", "c"), isUnavailable);
    await assert.rejects(client.logout("stp_x"), isUnavailable);
    assert.equal(client.cachedAnswers, 0);
  } finally {
    client.close();
  }
});

test("a stopped server is unavailable until it is back", async () => {
  const server = await TestServer.start();
  try {
    server.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client, counts } = server.client({ requestTimeoutMs: 2_000 });
    const session = (await client.login("cashier", "knock knock, who goes there")) as Authenticated;
    assert.equal(session.kind, "authenticated");

    await server.stop();
    for (let i = 0; i < 2; i++) {
      await assert.rejects(client.verifyToken(session.token), UnavailableError);
    }
    assert.equal(counts.get("VerifyToken"), 2, "errors are not cached");

    await server.resume();
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        assert.equal((await client.verifyToken(session.token)).user.handle, "cashier");
        break;
      } catch (error) {
        if (!(error instanceof UnavailableError) || Date.now() > deadline) {
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } finally {
    await server.close();
  }
});
