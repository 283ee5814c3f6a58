// Passkeys (WebAuthn) against the real server, with a software authenticator
// (soft-authenticator.ts) playing the browser and the platform passkey: registration,
// sign-in by identifier, discoverable and as second factor, replays, a wrong origin, a
// cloned authenticator, listing and removal, and the error kinds of the refusals.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  FailedPreconditionError,
  InvalidArgumentError,
  InvalidTokenError,
  NotFoundError,
  PermissionDeniedError,
  StPeterError,
  passkeyCredentialJson,
  type Authenticated,
  type Client,
  type LoginResult,
  type PasskeyOptionsJson,
  type TwoFactor,
} from "../src/index.js";
import { TestServer } from "./harness.js";
import { SoftAuthenticator } from "./soft-authenticator.js";

const PASSWORD = "knock knock, who goes there";
const WRONG_PASSWORD = "correct horse battery staple";
const ORIGIN = "https://localhost";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CEREMONY_ID = /^stw_[A-Za-z0-9_-]{43}$/;

/** Does passkeys for https://localhost. */
let server: TestServer;
/** Has no WebAuthn settings. */
let plain: TestServer;
let users = 0;

before(async () => {
  server = await TestServer.start(["--webauthn-rp-id", "localhost", "--webauthn-origin", ORIGIN]);
  plain = await TestServer.start();
});

after(async () => {
  await server?.close();
  await plain?.close();
});

/** A new user of its own for each test (throttles do not mix); answers the handle. */
function newUser(on: TestServer = server, password = PASSWORD): string {
  const handle = `user-${++users}`;
  on.addUser({ handle, email: `${handle}@bakery.example`, password });
  return handle;
}

async function login(client: Client, identifier: string, password: string): Promise<Authenticated> {
  const result = await client.login(identifier, password);
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  return result as Authenticated;
}

function rejectsWith<T extends StPeterError>(
  type: abstract new (...args: never[]) => T,
  detail: RegExp,
): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof type, `want ${type.name}, got ${String(error)}`);
    assert.match(error.detail, detail);
    return true;
  };
}

/** `JSON.parse(options).publicKey`, as the page reads it, with a base64url challenge of 16
 * bytes or more. */
function publicKey(options: PasskeyOptionsJson): Record<string, any> {
  const parsed = JSON.parse(options) as { publicKey?: Record<string, any> };
  assert.ok(parsed.publicKey, options);
  assert.match(parsed.publicKey.challenge, /^[A-Za-z0-9_-]{22,}$/, options);
  return parsed.publicKey;
}

function authenticated(result: LoginResult, handle: string): Authenticated {
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  assert.equal((result as Authenticated).user.handle, handle);
  return result as Authenticated;
}

test("without WebAuthn settings the passkey ceremonies are FailedPreconditionError naming the flags", async () => {
  const { client } = plain.client();
  const handle = newUser(plain);
  const account = client.account((await login(client, handle, PASSWORD)).token);
  const refused = rejectsWith(FailedPreconditionError, /--webauthn-rp-id/);
  await assert.rejects(client.beginPasskeyLogin(), refused);
  await assert.rejects(client.beginPasskeyLogin({ identifier: handle }), refused);
  const unknown = `stw_${"A".repeat(43)}`;
  await assert.rejects(client.finishPasskeyLogin(unknown, passkeyCredentialJson("{}")), refused);
  await assert.rejects(account.beginPasskeyRegistration(PASSWORD), refused);
  await assert.rejects(account.finishPasskeyRegistration(unknown, passkeyCredentialJson("{}"), "laptop"), refused);
  // Listing and removing still work (passkeys made before the settings went).
  assert.deepEqual(await account.listPasskeys(), []);
  await assert.rejects(account.removePasskey("00000000-0000-4000-8000-000000000000", PASSWORD), NotFoundError);
  assert.equal((await account.get()).passkeys, 0);
});

test("registration options parse as the browser's, and refusals have their kinds", async () => {
  const { client } = server.client();
  const handle = newUser();
  const account = client.account((await login(client, handle, PASSWORD)).token);

  await assert.rejects(
    account.beginPasskeyRegistration(WRONG_PASSWORD),
    rejectsWith(PermissionDeniedError, /current_password/),
  );
  const registration = await account.beginPasskeyRegistration(PASSWORD);
  assert.match(registration.registrationId, CEREMONY_ID);
  const options = publicKey(registration.optionsJson);
  assert.equal(options.rp.id, "localhost");
  assert.equal(options.authenticatorSelection.userVerification, "required");
  assert.equal(Buffer.from(options.user.id, "base64url").length, 16, "the user handle is the user's UUID");

  // Made on another origin: does not verify, and spends the registration.
  const elsewhere = new SoftAuthenticator().create(registration.optionsJson, "https://evil.localhost");
  await assert.rejects(
    account.finishPasskeyRegistration(registration.registrationId, elsewhere, "evil"),
    rejectsWith(InvalidArgumentError, /credential_json/),
  );
  const good = new SoftAuthenticator().create(registration.optionsJson, ORIGIN);
  await assert.rejects(
    account.finishPasskeyRegistration(registration.registrationId, good, "laptop"),
    rejectsWith(FailedPreconditionError, /registration_id/),
  );

  // Without user verification: refused.
  const again = await account.beginPasskeyRegistration(PASSWORD);
  const unverifying = new SoftAuthenticator();
  unverifying.userVerifying = false;
  await assert.rejects(
    account.finishPasskeyRegistration(again.registrationId, unverifying.create(again.optionsJson, ORIGIN), "laptop"),
    rejectsWith(InvalidArgumentError, /credential_json/),
  );

  // Malformed JSON is the caller's fault.
  const third = await account.beginPasskeyRegistration(PASSWORD);
  await assert.rejects(
    account.finishPasskeyRegistration(third.registrationId, passkeyCredentialJson("{not json"), "laptop"),
    rejectsWith(InvalidArgumentError, /credential_json/),
  );

  assert.deepEqual(await account.listPasskeys(), []);
  assert.equal((await account.get()).passkeys, 0);
  await assert.rejects(client.account("stp_not-a-token").listPasskeys(), InvalidTokenError);
  assert.throws(() => passkeyCredentialJson(42 as unknown as string), TypeError);
});

test("a passkey registers, signs in by identifier, discoverably and as second factor, and is removed", async () => {
  const { client } = server.client();
  const handle = newUser();
  const other = newUser(server, WRONG_PASSWORD);
  const account = client.account((await login(client, handle, PASSWORD)).token);
  const authenticator = new SoftAuthenticator();

  // Register.
  const registration = await account.beginPasskeyRegistration(PASSWORD);
  const startedAt = Date.now() - 1000;
  const passkey = await account.finishPasskeyRegistration(
    registration.registrationId,
    authenticator.create(registration.optionsJson, ORIGIN),
    "work laptop",
  );
  assert.match(passkey.passkeyId, UUID);
  assert.equal(passkey.name, "work laptop");
  assert.ok(passkey.createdAt.getTime() >= startedAt, passkey.createdAt.toISOString());
  assert.equal(passkey.lastUsedAt, undefined);
  assert.deepEqual(await account.listPasskeys(), [passkey]);
  assert.equal((await account.get()).passkeys, 1);
  // The next registration excludes it.
  const next = await account.beginPasskeyRegistration(PASSWORD);
  assert.deepEqual(
    publicKey(next.optionsJson).excludeCredentials.map((d: { id: string }) => d.id),
    authenticator.credentialIds,
  );

  // Sign in by identifier: the options name the passkey.
  let challenge = await client.beginPasskeyLogin({ identifier: `${handle}@bakery.example` });
  assert.match(challenge.challengeId, CEREMONY_ID);
  assert.deepEqual(
    publicKey(challenge.optionsJson).allowCredentials.map((d: { id: string }) => d.id),
    authenticator.credentialIds,
  );
  const assertion = authenticator.get(challenge.optionsJson, ORIGIN);
  const session = authenticated(await client.finishPasskeyLogin(challenge.challengeId, assertion), handle);
  assert.equal((await client.verifyToken(session.token)).user.handle, handle);
  // Its challenge is spent, and the assertion answers no other.
  assert.deepEqual(await client.finishPasskeyLogin(challenge.challengeId, assertion), {
    kind: "failed",
    reason: "challenge_expired",
  });
  challenge = await client.beginPasskeyLogin({ identifier: handle });
  assert.deepEqual(await client.finishPasskeyLogin(challenge.challengeId, assertion), {
    kind: "failed",
    reason: "invalid_credentials",
  });

  // Discoverable: no identifier, the passkey says who.
  challenge = await client.beginPasskeyLogin();
  assert.deepEqual(publicKey(challenge.optionsJson).allowCredentials ?? [], []);
  authenticated(
    await client.finishPasskeyLogin(challenge.challengeId, authenticator.get(challenge.optionsJson, ORIGIN)),
    handle,
  );
  const [used] = await account.listPasskeys();
  assert.ok(used?.lastUsedAt && used.lastUsedAt >= passkey.createdAt, JSON.stringify(used));

  // Another origin's assertion does not verify.
  challenge = await client.beginPasskeyLogin({ identifier: handle });
  const stranger = authenticator.clone();
  assert.deepEqual(
    await client.finishPasskeyLogin(
      challenge.challengeId,
      stranger.get(challenge.optionsJson, "https://evil.localhost"),
    ),
    { kind: "failed", reason: "invalid_credentials" },
  );

  // A cloned authenticator: the copy signs with counters the original has used already.
  const clone = authenticator.clone();
  challenge = await client.beginPasskeyLogin();
  authenticated(
    await client.finishPasskeyLogin(challenge.challengeId, authenticator.get(challenge.optionsJson, ORIGIN)),
    handle,
  );
  challenge = await client.beginPasskeyLogin();
  assert.deepEqual(
    await client.finishPasskeyLogin(challenge.challengeId, clone.get(challenge.optionsJson, ORIGIN)),
    { kind: "failed", reason: "invalid_credentials" },
  );

  // Malformed JSON is the caller's fault.
  challenge = await client.beginPasskeyLogin();
  await assert.rejects(
    client.finishPasskeyLogin(challenge.challengeId, passkeyCredentialJson("[]")),
    rejectsWith(InvalidArgumentError, /credential_json/),
  );

  // A password login asks for the second factor, which the passkey gives.
  const second = await client.login(handle, PASSWORD);
  assert.equal(second.kind, "two_factor", JSON.stringify(second));
  assert.ok((second as TwoFactor).methods.includes("passkey"), JSON.stringify(second));
  challenge = await client.beginPasskeyLogin({ twoFactorId: (second as TwoFactor).twoFactorId });
  authenticated(
    await client.finishPasskeyLogin(challenge.challengeId, authenticator.get(challenge.optionsJson, ORIGIN)),
    handle,
  );

  // Removal: the password, the user's own passkey only.
  await assert.rejects(
    account.removePasskey(passkey.passkeyId, WRONG_PASSWORD),
    rejectsWith(PermissionDeniedError, /current_password/),
  );
  const theirs = client.account((await login(client, other, WRONG_PASSWORD)).token);
  await assert.rejects(theirs.removePasskey(passkey.passkeyId, WRONG_PASSWORD), NotFoundError);
  await account.removePasskey(passkey.passkeyId, PASSWORD);
  assert.deepEqual(await account.listPasskeys(), []);
  assert.equal((await account.get()).passkeys, 0);
  await assert.rejects(account.removePasskey(passkey.passkeyId, PASSWORD), NotFoundError);
  challenge = await client.beginPasskeyLogin();
  assert.deepEqual(
    await client.finishPasskeyLogin(challenge.challengeId, authenticator.get(challenge.optionsJson, ORIGIN)),
    { kind: "failed", reason: "invalid_credentials" },
  );
  // The password alone logs in again.
  await login(client, handle, PASSWORD);
});
