import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { InvalidTokenError, type Authenticated, type Client } from "../src/index.js";
import { MovableClock, subscribed, TestServer } from "./harness.js";

let server: TestServer;
// Sessions of this server live 30 s, less than the cache TTLs the tests below set.
let shortServer: TestServer;

before(async () => {
  [server, shortServer] = await Promise.all([TestServer.start(), TestServer.start(["--session-ttl", "30s"])]);
  server.addUser({ handle: "cashier", password: "knock knock, who goes there" });
  shortServer.addUser({ handle: "cashier", password: "knock knock, who goes there" });
});

after(async () => {
  await Promise.all([server?.close(), shortServer?.close()]);
});

async function token(client: Client): Promise<string> {
  const result = await client.login("cashier", "knock knock, who goes there");
  assert.equal(result.kind, "authenticated");
  return (result as Authenticated).token;
}

const bogus = "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

test("a second verify is answered from the cache: for 5 min while the feed is subscribed", async () => {
  const clock = new MovableClock();
  const { client, counts } = server.client({ now: clock.now });
  const t = await token(client);
  await client.verifyToken(t); // starts the feed; its first checkpoint drops this answer
  await subscribed(client);
  const first = await client.verifyToken(t);
  first.roles.push("tampered");
  const second = await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 2);
  assert.deepEqual(second.roles, [], "a caller's change leaked into the cache");
  assert.equal(client.cachedAnswers, 1);

  clock.advance(299_000);
  await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 2);
  clock.advance(2_000);
  await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 3);
});

test("not subscribed (here: the feed turned off), an answer is served for the 5 s fallback TTL", async () => {
  const clock = new MovableClock();
  const { client, counts } = server.client({ now: clock.now, revocationFeed: false });
  const t = await token(client);
  await client.verifyToken(t);
  clock.advance(4_900);
  await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 1);
  clock.advance(200);
  await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 2);
  assert.equal(client.revocationFeedStatus.subscriptions, 0);
});

test("100 concurrent verifies of one token make one RPC", async () => {
  const { client, counts } = server.client();
  const t = await token(client);
  const answers = await Promise.all(Array.from({ length: 100 }, () => client.verifyToken(t)));
  assert.ok(answers.every((a) => a.user.handle === "cashier"));
  assert.equal(counts.get("VerifyToken"), 1);
});

test("the cache never serves past the token's expiry", async () => {
  const clock = new MovableClock();
  // The feed off, so that the cache's state does not depend on when it caught up.
  const { client, counts } = shortServer.client({ now: clock.now, revocationFeed: false, cacheFallbackTtlMs: 60_000 });
  const t = await token(client);
  const verified = await client.verifyToken(t);
  const left = verified.expiresAt.getTime() - Date.now();
  assert.ok(left <= 30_000 && left > 20_000, `token expires in ${left} ms, want about 30 s`);
  clock.advance(verified.expiresAt.getTime() - clock.now() - 3_000);
  await client.verifyToken(t);
  assert.equal(counts.get("VerifyToken"), 1);
  clock.advance(4_000);
  await client.verifyToken(t); // the server's own clock has not moved: still valid
  assert.equal(counts.get("VerifyToken"), 2, "served an answer past the token's expiry");
});

test("invalid tokens are cached briefly; zero turns that off", async () => {
  const clock = new MovableClock();
  const { client, counts } = server.client({ now: clock.now, revocationFeed: false });
  for (let i = 0; i < 3; i++) {
    await assert.rejects(client.verifyToken(bogus), InvalidTokenError);
  }
  assert.equal(counts.get("VerifyToken"), 1);
  clock.advance(6_000);
  await assert.rejects(client.verifyToken(bogus), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 2);

  const uncached = server.client({ invalidTokenTtlMs: 0, revocationFeed: false });
  await assert.rejects(uncached.client.verifyToken(bogus), InvalidTokenError);
  await assert.rejects(uncached.client.verifyToken(bogus), InvalidTokenError);
  assert.equal(uncached.counts.get("VerifyToken"), 2);
});

test("cache TTL and capacity are settings; the least recently used goes first", async () => {
  const clock = new MovableClock();
  const { client, counts } = server.client({
    now: clock.now,
    cacheTtlMs: 5_000,
    cacheFallbackTtlMs: 60_000,
    cacheCapacity: 2,
    revocationFeed: false,
  });
  const tokens = [await token(client), await token(client), await token(client)];
  for (const t of tokens) {
    await client.verifyToken(t);
  }
  assert.equal(client.cachedAnswers, 2);
  await client.verifyToken(tokens[2]!);
  await client.verifyToken(tokens[1]!);
  assert.equal(counts.get("VerifyToken"), 3);
  await client.verifyToken(tokens[0]!);
  assert.equal(counts.get("VerifyToken"), 4, "the first token was evicted");
  clock.advance(6_000);
  await client.verifyToken(tokens[0]!);
  assert.equal(counts.get("VerifyToken"), 5, "past the 5 s TTL");
});

test("logout evicts only its own token", async () => {
  const { client, counts } = server.client({ revocationFeed: false });
  const leaving = await token(client);
  const staying = await token(client);
  await client.verifyToken(leaving);
  await client.verifyToken(staying);
  await client.logout(leaving);
  assert.equal(client.cachedAnswers, 1);
  await client.verifyToken(staying);
  await assert.rejects(client.verifyToken(leaving), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 3);
});

test("a verify that starts after logout never gets an answer fetched before it", async () => {
  // Holds the next VerifyToken answer (already fetched from st-peter) until released.
  let hold: Promise<void> | undefined;
  let release: () => void = () => {};
  let answered = 0;
  const holding: import("@connectrpc/connect").Interceptor = (next) => async (request) => {
    const response = await next(request);
    if (request.method.name === "VerifyToken" && hold) {
      const held = hold;
      hold = undefined;
      answered++;
      await held;
    }
    return response;
  };
  const { client } = server.client({ interceptors: [holding] });
  for (let round = 0; round < 20; round++) {
    const t = await token(client);
    hold = new Promise((resolve) => (release = resolve));
    // Answered "valid" by st-peter before the logout; the answer arrives after it.
    const before = client.verifyToken(t);
    while (answered < round + 1) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await client.logout(t);
    const afterLogout = client.verifyToken(t);
    release();
    const early = await before;
    assert.equal(early.user.handle, "cashier");
    await assert.rejects(afterLogout, InvalidTokenError, `round ${round}: joined a fetch from before logout`);
    await assert.rejects(client.verifyToken(t), InvalidTokenError, `round ${round}: stale answer cached`);
  }
});
