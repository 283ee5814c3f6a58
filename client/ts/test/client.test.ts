import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  connect,
  InvalidArgumentError,
  InvalidTokenError,
  NotFoundError,
  StPeterError,
  type Authenticated,
  type Client,
  type TwoFactor,
} from "../src/index.js";
import { TestServer, totpCode, wrongTotpCode } from "./harness.js";

let server: TestServer;
let bakerId: string;
let cashierId: string;
let owlUri: string;

before(async () => {
  server = await TestServer.start();
  bakerId = server.addUser({
    handle: "lead-baker",
    email: "lead-baker@bakery.example",
    phone: "+15551234567",
    displayName: "Lead Baker",
    password: "open sesame, said Ali Baba",
  });
  server.grantRole("lead-baker", "baker");
  server.grantRole("lead-baker", "admin");
  cashierId = server.addUser({ handle: "cashier", email: "cashier@bakery.example", password: "knock knock, who goes there" });
  server.addUser({ handle: "night-owl", password: "whooo-whooo" });
  owlUri = server.enrollTotp("night-owl");
});

after(async () => {
  await server?.close();
});

async function login(client: Client, identifier: string, password: string): Promise<Authenticated> {
  const result = await client.login(identifier, password);
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  return result as Authenticated;
}

test("login, verify, lookup and logout", async () => {
  const { client, counts } = server.client();
  const session = await login(client, "LEAD-BAKER@Bakery.Example", "open sesame, said Ali Baba");
  const want = {
    userId: bakerId,
    handle: "lead-baker",
    email: "lead-baker@bakery.example",
    phone: "+15551234567",
    displayName: "Lead Baker",
    disabled: false,
    kind: "human",
  };
  assert.deepEqual(session.user, want);
  assert.match(session.token, /^stp_/);
  assert.ok(session.expiresAt.getTime() > Date.now());

  const verified = await client.verifyToken(session.token);
  assert.deepEqual(verified.user, want);
  assert.deepEqual(verified.roles, ["admin", "baker"]);
  assert.equal(verified.expiresAt.getTime(), session.expiresAt.getTime());

  const found = await client.lookupUser(bakerId, session.token, "CASHIER@bakery.example");
  assert.equal(found.userId, cashierId);
  assert.equal(found.handle, "cashier");
  assert.equal(found.phone, undefined);
  await assert.rejects(client.lookupUser(bakerId, session.token, "ghost"), NotFoundError);
  await assert.rejects(client.lookupUser(cashierId, session.token, "cashier"), InvalidTokenError);

  await client.logout(session.token);
  await assert.rejects(client.verifyToken(session.token), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 2, "logout evicts the cached answer");
  // Logging out an unknown or already revoked token succeeds.
  await client.logout(session.token);
});

test("failed logins are results, not errors", async () => {
  const { client } = server.client();
  const wrong = await client.login("cashier", "wrong-password");
  const unknown = await client.login("nobody", "knock knock, who goes there");
  assert.deepEqual(wrong, { kind: "failed", reason: "invalid_credentials" });
  assert.deepEqual(unknown, wrong);
});

test("two-factor login", async () => {
  const { client } = server.client();
  const challenge = async (): Promise<TwoFactor> => {
    const result = await client.login("night-owl", "whooo-whooo");
    assert.equal(result.kind, "two_factor", JSON.stringify(result));
    const tf = result as TwoFactor;
    assert.ok(tf.methods.includes("totp"), String(tf.methods));
    assert.ok(tf.twoFactorId.length > 0);
    assert.ok(tf.expiresAt.getTime() > Date.now());
    return tf;
  };
  const first = await challenge();
  assert.deepEqual(await client.verifyTwoFactor(first.twoFactorId, wrongTotpCode(owlUri)), {
    kind: "failed",
    reason: "invalid_code",
  });
  const code = totpCode(owlUri);
  const result = await client.verifyTwoFactor(first.twoFactorId, code);
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  const session = result as Authenticated;
  assert.equal(session.user.handle, "night-owl");
  assert.equal((await client.verifyToken(session.token)).user.handle, "night-owl");
  // The same code again, on a new challenge: a replay.
  assert.deepEqual(await client.verifyTwoFactor((await challenge()).twoFactorId, code), {
    kind: "failed",
    reason: "invalid_code",
  });
});

test("malformed input is an invalid argument naming the field", async () => {
  const { client } = server.client();
  await assert.rejects(client.login("", "x"), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.kind, "invalid_argument");
    assert.equal(error.detail, "identifier: must not be empty");
    return true;
  });
  await assert.rejects(client.verifyToken(""), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError && !(error instanceof InvalidTokenError));
    assert.equal(error.detail, "token: must not be empty");
    return true;
  });
});

test("invalid targets are refused at connect", () => {
  for (const target of ["", "not a uri", "http://127.0.0.1", "ftp://127.0.0.1:21", "https://example.invalid:443/path"]) {
    assert.throws(() => connect(target), TypeError, target);
  }
});

test("every error is a StPeterError", async () => {
  const { client } = server.client();
  await assert.rejects(client.verifyToken("not-a-token"), (error: unknown) => {
    assert.ok(error instanceof StPeterError && error instanceof InvalidTokenError);
    assert.equal(error.message, "token is not valid");
    return true;
  });
});
