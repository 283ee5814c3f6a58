// The revocation feed against the real server: evictions by token and by user, a stream
// resumed from its sequence after a restart, a reset from a new database, the fallback TTL
// while st-peter is away, one subscription per client, a hung server, and close().
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { InvalidTokenError, UnavailableError, type Authenticated, type Client } from "../src/index.js";
import { eventually, FeedRecorder, subscribed, TestServer } from "./harness.js";

// Long enough that, within a test, only the feed can have evicted an answer.
const LONG = { cacheTtlMs: 600_000, cacheFallbackTtlMs: 600_000 };

let server: TestServer;
let cashierId: string;

before(async () => {
  server = await TestServer.start();
  cashierId = server.addUser({ handle: "cashier", password: "knock knock, who goes there" });
  server.addUser({ handle: "baker", password: "open sesame, said Ali Baba" });
});

after(async () => {
  await server?.close();
});

async function token(client: Client, handle = "cashier"): Promise<string> {
  const result = await client.login(handle, handle === "cashier" ? "knock knock, who goes there" : "open sesame, said Ali Baba");
  assert.equal(result.kind, "authenticated");
  return (result as Authenticated).token;
}

/** A client whose feed is subscribed, with `tokens` verified (and cached) after that:
 * the first checkpoint of a stream "from now" drops what was cached before it. */
async function subscribedClient(on: TestServer, options: Parameters<TestServer["client"]>[0], tokens: string[]) {
  const recorder = new FeedRecorder();
  const made = on.client({ ...options, interceptors: [recorder.interceptor] });
  for (const t of tokens) {
    await made.client.verifyToken(t);
  }
  await subscribed(made.client);
  for (const t of tokens) {
    await made.client.verifyToken(t);
  }
  const cachedAt = made.counts.get("VerifyToken");
  for (const t of tokens) {
    await made.client.verifyToken(t);
  }
  assert.equal(made.counts.get("VerifyToken"), cachedAt, "the tokens were not cached");
  return { ...made, recorder };
}

/** Verifies until the token is refused; answers how long that took. */
async function refusedSoon(client: Client, t: string, timeoutMs: number): Promise<number> {
  const { ms } = await eventually(
    "the revoked token refused",
    async () => {
      try {
        await client.verifyToken(t);
        return false;
      } catch (error) {
        if (error instanceof InvalidTokenError) {
          return true;
        }
        throw error;
      }
    },
    timeoutMs,
  );
  return ms;
}

/** Revokes a throwaway session and waits until the client has seen an event, so that its
 * next subscription asks for the events after a sequence (not "from now"). */
async function advanceSequence(on: TestServer, client: Client): Promise<bigint> {
  const other = on.client({ revocationFeed: false });
  await other.client.logout(await token(other.client));
  other.client.close();
  const { value } = await eventually("the client saw an event", () => {
    const sequence = client.revocationFeedStatus.lastSequence;
    return sequence > 0n && sequence;
  });
  return value;
}

function sha256(t: string): string {
  return createHash("sha256").update(t).digest("hex");
}

test("a token revoked elsewhere (Logout from another client, the admin CLI) is refused soon after, TTLs long", async (t) => {
  const { client: other } = server.client({ cacheTtlMs: 0, revocationFeed: false });
  const loggedOut = await token(other);
  const cliRevoked = await token(other);
  const { client, recorder } = await subscribedClient(server, LONG, [loggedOut, cliRevoked]);

  await other.logout(loggedOut);
  const byLogout = await refusedSoon(client, loggedOut, 5_000);
  server.revokeSession(cliRevoked);
  const byCli = await refusedSoon(client, cliRevoked, 5_000);
  t.diagnostic(`refused ${byLogout} ms after Logout, ${byCli} ms after the CLI's revoke (contract: 1 s)`);

  const hashes = recorder.events.flatMap((e) =>
    e.change.case === "tokenHash" ? [Buffer.from(e.change.value).toString("hex")] : [],
  );
  assert.ok(hashes.includes(sha256(loggedOut)) && hashes.includes(sha256(cliRevoked)), "no token_hash events");
  assert.equal(client.revocationFeedStatus.subscriptions, 1);
});

test("a role granted with the admin CLI evicts that user's cached answers, and only theirs", async (t) => {
  const { client: other } = server.client({ revocationFeed: false });
  const first = await token(other);
  const second = await token(other);
  const someoneElse = await token(other, "baker");
  const { client, counts } = await subscribedClient(server, LONG, [first, second, someoneElse]);
  assert.deepEqual((await client.verifyToken(first)).roles, []);
  const before = counts.get("VerifyToken");

  server.grantRole("cashier", "oven");
  const { ms } = await eventually("the new role in the cached answer", async () => {
    const verified = await client.verifyToken(first);
    return verified.roles.includes("oven");
  });
  t.diagnostic(`role seen ${ms} ms after the grant`);
  assert.deepEqual((await client.verifyToken(second)).roles, ["oven"]);
  assert.equal((await client.verifyToken(someoneElse)).user.handle, "baker");
  assert.equal(counts.get("VerifyToken"), before + 2, "evicted more (or less) than the cashier's two answers");
  assert.equal((await client.verifyToken(first)).user.userId, cashierId);
});

test("answers cached before the feed first caught up are dropped by its first checkpoint", async () => {
  const { client: other } = server.client({ revocationFeed: false });
  const t = await token(other);
  // Sees when st-peter has applied the logout below.
  const { client: observer } = server.client();
  await observer.verifyToken(t);
  await subscribed(observer);
  // Holds this client's first WatchRevocations call until released.
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  let watches = 0;
  const { client } = server.client({
    ...LONG,
    interceptors: [
      (next) => async (request) => {
        if (request.method.name === "WatchRevocations" && watches++ === 0) {
          await held;
        }
        return next(request);
      },
    ],
  });
  assert.equal((await client.verifyToken(t)).user.handle, "cashier"); // cached; the feed waits
  const seen = observer.revocationFeedStatus.lastSequence;
  await other.logout(t); // before the subscription's "now": no stream will report it
  await eventually("st-peter applied the logout", () => observer.revocationFeedStatus.lastSequence > seen);
  assert.equal((await client.verifyToken(t)).user.handle, "cashier", "the stale answer is still cached");
  release();
  await subscribed(client);
  await assert.rejects(client.verifyToken(t), InvalidTokenError, "a stale answer got the long TTL");
});

test("many concurrent verifies of many tokens start one subscription; none without a verify or with the feed off", async () => {
  const { client: other } = server.client({ revocationFeed: false });
  const tokens: string[] = [];
  for (let i = 0; i < 5; i++) {
    tokens.push(await token(other)); // one at a time: concurrent logins may be shed on a busy machine
  }
  const { client, counts } = server.client();
  assert.deepEqual(client.revocationFeedStatus, { subscribed: false, lastSequence: 0n, subscriptions: 0 });
  await token(client); // a login starts nothing
  assert.equal(client.revocationFeedStatus.subscriptions, 0);

  const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => client.verifyToken(tokens[i % tokens.length]!)));
  assert.ok(answers.every((a) => a.user.handle === "cashier"));
  await subscribed(client);
  await Promise.all(tokens.map((t) => client.verifyToken(t)));
  assert.equal(client.revocationFeedStatus.subscriptions, 1);
  assert.equal(counts.get("WatchRevocations"), 1);

  const off = server.client({ revocationFeed: false });
  await off.client.verifyToken(tokens[0]!);
  assert.equal(off.counts.get("WatchRevocations"), 0);
  assert.deepEqual(off.client.revocationFeedStatus, { subscribed: false, lastSequence: 0n, subscriptions: 0 });
});

test("a stream cut by a restart resumes from its last sequence: a revoke made while st-peter was down is replayed", async (t) => {
  const own = await TestServer.start();
  try {
    own.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client: other } = own.client({ revocationFeed: false });
    const revoked = await token(other);
    const kept = await token(other);
    const { client, counts, recorder } = await subscribedClient(own, LONG, [revoked, kept]);
    const sequence = await advanceSequence(own, client);

    await own.stop();
    await eventually("unsubscribed once st-peter stopped", () => !client.revocationFeedStatus.subscribed);
    own.revokeSession(revoked);
    assert.equal((await client.verifyToken(revoked)).user.handle, "cashier", "served from the cache meanwhile");
    await own.resume(); // same port, same database
    const ms = await refusedSoon(client, revoked, 20_000);
    t.diagnostic(`refused ${ms} ms after st-peter was back`);

    // The stream that brought the revoke (made while no stream was open: a replay).
    const replayed = recorder.streams.find((stream) =>
      stream.events.some(
        (e) => e.change.case === "tokenHash" && Buffer.from(e.change.value).toString("hex") === sha256(revoked),
      ),
    );
    assert.ok(replayed, "the revoke was not replayed");
    assert.equal(replayed.afterSequence, sequence, "resubscribed from another sequence than the last one seen");
    const before = counts.get("VerifyToken");
    await client.verifyToken(kept);
    assert.equal(counts.get("VerifyToken"), before, "the replay dropped more than the revoked token");
    assert.ok(client.revocationFeedStatus.subscriptions >= 2);
  } finally {
    await own.close();
  }
});

test("st-peter restarted on a new, empty database says reset, and the client drops its whole cache", async () => {
  const own = await TestServer.start();
  try {
    own.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client: other } = own.client({ revocationFeed: false });
    const tokens = [await token(other), await token(other)];
    const { client, recorder } = await subscribedClient(own, LONG, tokens);
    const sequence = await advanceSequence(own, client);
    assert.equal(client.cachedAnswers, 2);

    await own.stop();
    own.useNewDatabase();
    await own.resume(); // same port
    await eventually("the cache dropped", () => client.cachedAnswers === 0, 20_000);
    await subscribed(client);

    // Attempts refused while st-peter was catching up received nothing; the one that
    // got through was told reset first.
    const resumed = recorder.streams.find((s) => s.afterSequence === sequence && s.events.length > 0);
    assert.ok(resumed, `no resubscription from ${sequence}: ${recorder.streams.map((s) => s.afterSequence)}`);
    assert.equal(resumed.events[0]?.change.case, "reset");
    await assert.rejects(client.verifyToken(tokens[0]!), InvalidTokenError, "a token of the old database");
  } finally {
    await own.close();
  }
});

test("while st-peter is down a cached answer is served for the fallback TTL, then the verify is unavailable", async () => {
  const own = await TestServer.start();
  try {
    own.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client: other } = own.client({ revocationFeed: false });
    const early = await token(other);
    const late = await token(other);
    // A clock that moves only when told: only the cache's rules decide.
    let now = Date.now();
    const options = { cacheTtlMs: 600_000, cacheFallbackTtlMs: 300, requestTimeoutMs: 2_000, now: () => now };
    const { client, counts } = await subscribedClient(own, options, [early]);
    await advanceSequence(own, client); // so that it resubscribes from a sequence, not "from now"

    now += 60_000; // subscribed: the long TTL applies
    await client.verifyToken(early);
    await client.verifyToken(late);
    const cached = counts.get("VerifyToken");

    await own.stop();
    await eventually("unsubscribed once st-peter stopped", () => !client.revocationFeedStatus.subscribed);
    now += 299;
    assert.equal((await client.verifyToken(late)).user.handle, "cashier");
    assert.equal(counts.get("VerifyToken"), cached, "not served from the cache within the fallback TTL");
    await assert.rejects(client.verifyToken(early), UnavailableError, "served 60 s after it was cached, unsubscribed");
    now += 2;
    await assert.rejects(client.verifyToken(late), UnavailableError, "served past the fallback TTL");

    // Back and resubscribed from its sequence (the replay evicts whatever changed), the
    // answers kept meanwhile are served again.
    await own.resume();
    await subscribed(client, 20_000);
    await client.verifyToken(late);
    assert.equal(counts.get("VerifyToken"), cached + 2, "the kept answer was not served again");
  } finally {
    await own.close();
  }
});

test("a hung st-peter (SIGSTOP) is noticed by the silence watchdog; the feed subscribes again once it runs", async () => {
  const own = await TestServer.start();
  try {
    own.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client } = own.client({ revocationFeedSilenceMs: 500 });
    await client.verifyToken(await token(client));
    await subscribed(client);

    own.freeze();
    try {
      // Every stream now goes silent (the connection stays open): each is given up in turn.
      await eventually("the silent stream given up", () => !client.revocationFeedStatus.subscribed);
      const gaveUp = client.revocationFeedStatus.subscriptions;
      await eventually("another stream tried and given up", () => client.revocationFeedStatus.subscriptions >= gaveUp + 2);
      assert.equal(client.revocationFeedStatus.subscribed, false, "subscribed to a hung server");
    } finally {
      own.thaw();
    }
    await subscribed(client);
  } finally {
    await own.close();
  }
});

test("close() stops the feed: no resubscription afterwards, nothing left running", async () => {
  const own = await TestServer.start();
  try {
    own.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client, counts } = own.client();
    await client.verifyToken(await token(client));
    await subscribed(client);
    await own.stop(); // the stream ends; the feed backs off and retries, refused
    await eventually("a resubscription tried", () => counts.get("WatchRevocations") >= 2);
    client.close();
    const closedAt = counts.get("WatchRevocations");
    assert.equal(client.revocationFeedStatus.subscribed, false);
    await sleep(400); // backoff steps (each attempt is counted, refused or not), had they been left running
    assert.equal(counts.get("WatchRevocations"), closedAt, "subscribed again after close()");
  } finally {
    await own.close();
  }
});

test("a process that never calls close() still exits while its feed is subscribed", async () => {
  const { client } = server.client({ revocationFeed: false });
  const t = await token(client);
  const script = fileURLToPath(new URL("./feed-exit.js", import.meta.url));
  const child = spawn(process.execPath, [script, server.target, t], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? String(signal))),
  );
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  try {
    assert.equal(await exited, 0, `the process did not exit by itself (killed after 15 s): ${output}`);
  } finally {
    clearTimeout(timer);
  }
  assert.deepEqual(JSON.parse(output), { handle: "cashier", subscribed: true, subscriptions: 1 });
});
