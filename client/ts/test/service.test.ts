// Service identity mode against the real server, started so that it answers VerifyToken,
// LookupUser and WatchRevocations only for callers with credentials and gives exchanged
// tokens 3 s of life; service accounts, keys and roles made with its admin CLI.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { inspect } from "node:util";

import { Code, type Interceptor } from "@connectrpc/connect";

import {
  ApiKeyRejectedError,
  InvalidArgumentError,
  InvalidTokenError,
  NotFoundError,
  PermissionDeniedError,
  StPeterError,
  type Authenticated,
  type Client,
  type ClientOptions,
} from "../src/index.js";
import { eventually, MovableClock, subscribed, TestServer } from "./harness.js";

const SERVICE_FLAGS = ["--api-token-ttl", "3s", "--require-caller-credentials"];
const TOKEN_TTL_MS = 3_000;
const PASSWORD = "knock knock, who goes there";

interface Setup {
  server: TestServer;
  cashierId: string;
  billingId: string;
  /** Holds st-peter:lookup. */
  billingKey: string;
  billingKeyId: string;
  /** Holds no role. */
  reportingKey: string;
}

/** A server with a person (cashier), a service allowed to look users up (billing) and one
 * that is not (reporting). */
async function serviceServer(): Promise<Setup> {
  const server = await TestServer.start(SERVICE_FLAGS);
  try {
    const cashierId = server.addUser({ handle: "cashier", email: "cashier@bakery.example", password: PASSWORD });
    const billingId = server.addService("billing");
    const billing = server.createApiKey("billing");
    server.grantRole("billing", "st-peter:lookup");
    server.addService("reporting");
    const reporting = server.createApiKey("reporting");
    return {
      server,
      cashierId,
      billingId,
      billingKey: billing.apiKey,
      billingKeyId: billing.keyId,
      reportingKey: reporting.apiKey,
    };
  } catch (error) {
    await server.close();
    throw error;
  }
}

/** What a client's ExchangeApiKey calls answered and when they were sent, and the
 * authorization header each call carried: seen by an interceptor, beside the client. */
class Wire {
  readonly exchanges: Array<{ at: number; token: string }> = [];
  readonly authorization: Array<{ method: string; value: string | null }> = [];

  readonly interceptor: Interceptor = (next) => async (request) => {
    this.authorization.push({ method: request.method.name, value: request.header.get("authorization") });
    const at = Date.now();
    const response = await next(request);
    if (request.method.name === "ExchangeApiKey" && !response.stream) {
      this.exchanges.push({ at, token: (response.message as unknown as { token: string }).token });
    }
    return response;
  };

  /** The authorization headers sent with `method`, in order. */
  sent(method: string): Array<string | null> {
    return this.authorization.filter((a) => a.method === method).map((a) => a.value);
  }
}

function serviceClient(server: TestServer, apiKey: string, options: ClientOptions = {}) {
  const wire = new Wire();
  const made = server.client({ ...options, apiKey, interceptors: [...(options.interceptors ?? []), wire.interceptor] });
  return { ...made, wire };
}

async function personToken(client: Client): Promise<string> {
  const result = await client.login("cashier", PASSWORD);
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  return (result as Authenticated).token;
}

/** A well-formed key st-peter never issued. */
function unknownKey(): string {
  return `stk_${randomBytes(32).toString("base64url")}`;
}

let setup: Setup;

before(async () => {
  setup = await serviceServer();
});

after(async () => {
  await setup?.server.close();
});

test("exchangeApiKey answers a token of the service account; a key st-peter refuses is ApiKeyRejectedError, never an invalid token", async () => {
  const { client } = setup.server.client();
  const before = Date.now();
  const session = await client.exchangeApiKey(setup.billingKey);
  assert.equal(session.kind, "authenticated");
  assert.match(session.token, /^stp_/);
  assert.deepEqual(
    { ...session.user },
    {
      userId: setup.billingId,
      handle: "billing",
      email: undefined,
      phone: undefined,
      displayName: session.user.displayName,
      disabled: false,
      kind: "service",
    },
  );
  const lifetime = session.expiresAt.getTime() - before;
  assert.ok(lifetime > TOKEN_TTL_MS - 1_000 && lifetime <= TOKEN_TTL_MS + 1_000, `lifetime ${lifetime} ms, want about 3 s`);

  await assert.rejects(client.exchangeApiKey(unknownKey()), (error: unknown) => {
    assert.ok(error instanceof ApiKeyRejectedError && !(error instanceof InvalidTokenError), String(error));
    assert.equal(error.kind, "api_key_rejected");
    assert.equal(error.code, Code.Unauthenticated);
    return true;
  });
  await assert.rejects(client.exchangeApiKey(""), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.match(error.detail, /^api_key: /);
    return true;
  });
});

test("a person's token verified through a service identity client; the service's own token verifies as a service", async () => {
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey, { cacheTtlMs: 0 });
  const token = await personToken(client);
  const verified = await client.verifyToken(token);
  assert.equal(verified.user.userId, setup.cashierId);
  assert.equal(verified.user.kind, "human");
  assert.deepEqual(verified.roles, []);
  assert.equal(counts.get("ExchangeApiKey"), 1);
  const [bearer] = wire.sent("VerifyToken");
  assert.equal(bearer, `Bearer ${wire.exchanges[0]!.token}`, "VerifyToken sent without the service token");

  const own = await client.verifyToken(wire.exchanges[0]!.token);
  assert.equal(own.user.userId, setup.billingId);
  assert.equal(own.user.kind, "service");
  assert.deepEqual(own.roles, ["st-peter:lookup"]);
  assert.equal(counts.get("ExchangeApiKey"), 1, "a fresh token was exchanged again");
  // A service account has no account to run.
  await assert.rejects(client.account(wire.exchanges[0]!.token).get(), PermissionDeniedError);
});

test("lookupUser(identifier) asks as the service; the actor form still works", async () => {
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey);
  const found = await client.lookupUser("CASHIER@bakery.example");
  assert.equal(found.userId, setup.cashierId);
  assert.equal(found.handle, "cashier");
  assert.equal(found.kind, "human");
  await assert.rejects(client.lookupUser("ghost"), NotFoundError);
  assert.equal(counts.get("ExchangeApiKey"), 1);
  assert.ok(wire.sent("LookupUser").every((value) => value === `Bearer ${wire.exchanges[0]!.token}`));

  // On behalf of a person (their own token), the service's token as caller credentials.
  const token = await personToken(client);
  assert.equal((await client.lookupUser(setup.cashierId, token, "cashier")).userId, setup.cashierId);
  await assert.rejects(client.lookupUser(setup.billingId, token, "cashier"), InvalidTokenError);

  // Without an API key there is no service to ask as.
  const { client: plain } = setup.server.client();
  await assert.rejects(plain.lookupUser("cashier"), TypeError);
});

test("an anonymous client is refused with PermissionDeniedError (caller credentials), not an invalid token, and caches nothing", async () => {
  const { client: service } = serviceClient(setup.server, setup.billingKey);
  const token = await personToken(service);
  const { client } = setup.server.client();
  const refused = (error: unknown): boolean => {
    assert.ok(error instanceof PermissionDeniedError && !(error instanceof InvalidTokenError), String(error));
    assert.equal(error.kind, "permission_denied");
    assert.equal(error.code, Code.PermissionDenied);
    assert.match(error.detail, /^caller credentials:/);
    return true;
  };
  await assert.rejects(client.verifyToken(token), refused);
  await assert.rejects(client.verifyToken(token), refused);
  await assert.rejects(client.lookupUser(setup.cashierId, token, "cashier"), refused);
  assert.equal(client.cachedAnswers, 0);
  // The token itself was fine all along.
  assert.equal((await service.verifyToken(token)).user.userId, setup.cashierId);
});

test("a service without st-peter:lookup is refused at lookupUser (no second exchange) and still verifies tokens", async () => {
  const { client, counts } = serviceClient(setup.server, setup.reportingKey);
  const token = await personToken(client);
  assert.equal((await client.verifyToken(token)).user.userId, setup.cashierId);
  await assert.rejects(client.lookupUser("cashier"), (error: unknown) => {
    assert.ok(error instanceof PermissionDeniedError, String(error));
    assert.doesNotMatch(error.detail, /^caller credentials:/);
    return true;
  });
  assert.equal(counts.get("ExchangeApiKey"), 1, "the refusal was taken for a refused token");
});

test("the revocation feed subscribes with the service token: a logout elsewhere evicts within about a second", async (t) => {
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey, {
    cacheTtlMs: 600_000,
    cacheFallbackTtlMs: 600_000,
  });
  const token = await personToken(client);
  await client.verifyToken(token);
  await subscribed(client);
  assert.equal(wire.sent("WatchRevocations")[0], `Bearer ${wire.exchanges[0]!.token}`);
  // The first checkpoint of a stream "from now" drops what was cached before it.
  await client.verifyToken(token);
  const cached = counts.get("VerifyToken");
  await client.verifyToken(token);
  assert.equal(counts.get("VerifyToken"), cached, "not cached");

  const { client: other } = setup.server.client({ revocationFeed: false });
  await other.logout(token);
  const { ms } = await eventually(
    "the logged-out token refused",
    async () => {
      try {
        await client.verifyToken(token);
        return false;
      } catch (error) {
        if (error instanceof InvalidTokenError) {
          return true;
        }
        throw error;
      }
    },
    2_000,
  );
  t.diagnostic(`refused ${ms} ms after the logout (contract: 1 s)`);
  assert.equal(client.revocationFeedStatus.subscriptions, 1);
});

test("concurrent callers share one exchange, first and at a refresh", async () => {
  // Twenty different tokens to verify, so that twenty calls are on the wire at once (the
  // cache makes one call of concurrent verifies of one token; lookups are throttled per
  // actor): tokens of the other service, from exchanges of its key.
  const { client: plain } = setup.server.client();
  const tokens = await Promise.all(Array.from({ length: 20 }, async () => (await plain.exchangeApiKey(setup.reportingKey)).token));
  const clock = new MovableClock();
  const { client, counts } = serviceClient(setup.server, setup.billingKey, { cacheTtlMs: 0, now: clock.now });
  const burst = async (): Promise<void> => {
    const verified = await Promise.all(tokens.map((token) => client.verifyToken(token)));
    assert.ok(verified.every((v) => v.user.handle === "reporting"));
  };
  await burst();
  assert.equal(counts.get("ExchangeApiKey"), 1);
  await burst();
  assert.equal(counts.get("ExchangeApiKey"), 1, "a fresh token was exchanged again");
  // Less than a third of the token's 3 s is left: the next calls exchange, once.
  clock.advance(2_100);
  await burst();
  assert.equal(counts.get("ExchangeApiKey"), 2);
  assert.equal(counts.get("VerifyToken"), 60, "a call was retried");
});

test("a token refused as caller credentials is dropped, exchanged again and the call retried once", async () => {
  // The feed off: it would report the revocation and the client drop the token unasked.
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey, { cacheTtlMs: 0, revocationFeed: false });
  const token = await personToken(client);
  await client.verifyToken(token);
  // The service's token revoked behind the client's back (as an operator would).
  setup.server.revokeSession(wire.exchanges[0]!.token);
  // st-peter learns of the revocation within a second; until then the old token passes.
  const { ms } = await eventually("a second exchange", async () => {
    assert.equal((await client.verifyToken(token)).user.userId, setup.cashierId);
    return counts.get("ExchangeApiKey") === 2;
  });
  const headers = wire.sent("VerifyToken");
  assert.equal(headers.at(-1), `Bearer ${wire.exchanges[1]!.token}`);
  assert.equal(headers.at(-2), `Bearer ${wire.exchanges[0]!.token}`, "no refused call before the retry");
  assert.ok(ms < 2_000, `the revoked service token passed for ${ms} ms`);
});

test("a service token the feed reports revoked is exchanged again before the next call, which is not refused", async () => {
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey, { cacheTtlMs: 0 });
  const token = await personToken(client);
  await client.verifyToken(token);
  await subscribed(client);
  const sequence = client.revocationFeedStatus.lastSequence;
  setup.server.revokeSession(wire.exchanges[0]!.token);
  await eventually("the feed reported the revocation", () => client.revocationFeedStatus.lastSequence > sequence);
  const verifies = counts.get("VerifyToken");
  assert.equal((await client.verifyToken(token)).user.userId, setup.cashierId);
  assert.equal(counts.get("ExchangeApiKey"), 2);
  assert.equal(counts.get("VerifyToken"), verifies + 1, "the call was refused and retried");
  assert.equal(wire.sent("VerifyToken").at(-1), `Bearer ${wire.exchanges[1]!.token}`);
});

test("a revoked key: the client fails with ApiKeyRejectedError once its token is gone, and caches no verdict on the token", async (t) => {
  const own = await serviceServer();
  try {
    // The feed off: only the calls below exchange.
    const { client, counts } = serviceClient(own.server, own.billingKey, { cacheTtlMs: 0, revocationFeed: false });
    const token = await personToken(client);
    await client.verifyToken(token);
    own.server.revokeApiKey(own.billingKeyId);
    const { value: error, ms } = await eventually("the revoked key refused", async () => {
      try {
        await client.verifyToken(token); // st-peter may take a moment to learn of it
        return false;
      } catch (error) {
        return error;
      }
    });
    t.diagnostic(`refused ${ms} ms after the revoke`);
    assert.ok(error instanceof ApiKeyRejectedError && !(error instanceof InvalidTokenError), String(error));
    assert.equal(error.kind, "api_key_rejected");
    assert.equal(error.code, Code.Unauthenticated);
    assert.equal(client.cachedAnswers, 0, "an answer was cached for the token");
    await assert.rejects(client.lookupUser("cashier"), ApiKeyRejectedError);
    await assert.rejects(client.verifyToken(token), ApiKeyRejectedError);
    // A refused key is answered for a moment without asking st-peter again.
    assert.equal(counts.get("ExchangeApiKey"), 2);
    assert.doesNotMatch(inspect(error, { depth: 10 }), new RegExp(own.billingKey));

    // The person's token was never the problem.
    const { client: other } = serviceClient(own.server, own.reportingKey);
    assert.equal((await other.verifyToken(token)).user.userId, own.cashierId);
  } finally {
    await own.server.close();
  }
});

test("a service token is exchanged again before it expires: 10 s of calls, 3 s tokens, no call fails", async (t) => {
  // The server counts every client's exchanges, and a service client left subscribed by an
  // earlier test exchanges again each time its feed's token ends: close those first.
  setup.server.closeClients();
  const { client, counts, wire } = serviceClient(setup.server, setup.billingKey, { cacheTtlMs: 0 });
  // Three sessions, so that each round has three verifies on the wire at once (the cache
  // joins concurrent verifies of one token) and a refresh meets concurrent callers.
  const tokens = [await personToken(client), await personToken(client), await personToken(client)];
  const audited = () => setup.server.audits("api_key", "exchanged", setup.billingId);
  const auditedBefore = audited();
  const failures: string[] = [];
  let calls = 0;
  let lookups = 0;
  const record = (call: Promise<unknown>): Promise<unknown> =>
    call.then(
      () => calls++,
      (error: unknown) => failures.push(error instanceof StPeterError ? `${error.kind}: ${error.message}` : String(error)),
    );
  const start = Date.now();
  while (Date.now() - start < 10_000) {
    const round = tokens.map((token) => record(client.verifyToken(token)));
    // Lookups are throttled per actor (a burst of 20, then one a second): one every 600 ms.
    if (Date.now() - start >= lookups * 600) {
      lookups++;
      round.push(record(client.lookupUser("cashier")));
    }
    await Promise.all(round);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const at = wire.exchanges.map((e) => e.at - start);
  t.diagnostic(`${calls} calls (${lookups} lookups), exchanges at ${at.join(", ")} ms`);
  assert.deepEqual(failures, []);
  assert.ok(calls > 400, `only ${calls} calls`);
  assert.equal(counts.get("ExchangeApiKey"), wire.exchanges.length);
  // st-peter's own count: its audit log has a line per exchange.
  await eventually("the audit log has the exchanges", () => audited() - auditedBefore >= wire.exchanges.length, 2_000);
  assert.equal(audited() - auditedBefore, wire.exchanges.length, "the audit log and the wire disagree");
  // One at first, then one about every 2 s (two thirds of 3 s): 5 or 6.
  assert.ok(wire.exchanges.length >= 3, `${wire.exchanges.length} exchanges`);
  assert.ok(wire.exchanges.length <= 7, `${wire.exchanges.length} exchanges: more than one per refresh`);
  for (let i = 1; i < at.length; i++) {
    const gap = at[i]! - at[i - 1]!;
    assert.ok(gap >= 1_500 && gap < TOKEN_TTL_MS, `exchange ${i} came ${gap} ms after the one before`);
  }
  assert.equal(new Set(wire.exchanges.map((e) => e.token)).size, wire.exchanges.length, "an exchange answered an old token");
});

test("a resubscription of the feed takes the token of the moment", async () => {
  const own = await serviceServer();
  try {
    const clock = new MovableClock();
    const { client, wire } = serviceClient(own.server, own.billingKey, { cacheTtlMs: 0, now: clock.now });
    const token = await personToken(client);
    await client.verifyToken(token);
    await subscribed(client);
    clock.advance(2_100);
    await client.verifyToken(token);
    assert.equal(wire.exchanges.length, 2);
    // The stream ends with the server; the feed comes back once st-peter does.
    await own.server.stop();
    await own.server.resume();
    await eventually("subscribed again", () => client.revocationFeedStatus.subscriptions > 1 && client.revocationFeedStatus.subscribed);
    // The moved clock shortens the second token's life as the client sees it, so the feed
    // may have exchanged a third meanwhile: what counts is that it sent the newest.
    const sent = wire.sent("WatchRevocations");
    assert.equal(sent[0], `Bearer ${wire.exchanges[0]!.token}`);
    assert.equal(sent.at(-1), `Bearer ${wire.exchanges.at(-1)!.token}`);
    assert.notEqual(sent.at(-1), sent[0]);
  } finally {
    await own.server.close();
  }
});

test("neither the API key nor the service token is ever printed", async () => {
  const { client, wire } = serviceClient(setup.server, setup.billingKey);
  await client.lookupUser("cashier");
  const serviceToken = wire.exchanges[0]!.token;
  const shown = [
    inspect(client, { depth: Infinity, showHidden: true }),
    JSON.stringify(client),
    String(client),
    `${client}`,
  ];
  for (const text of shown) {
    assert.ok(!text.includes(setup.billingKey), `the key in ${text}`);
    assert.ok(!text.includes(serviceToken), `the token in ${text}`);
  }
  assert.match(shown[0]!, /apiKey: \[redacted\]/);
  assert.throws(() => setup.server.client({ apiKey: "" }), TypeError);
});
