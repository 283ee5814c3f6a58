// Account self-service (client.account(token)) against the real server: password change,
// TOTP enrollment and removal, recovery codes, sessions, the cache eviction after calls that
// end sessions, and that neither the token nor the otpauth URI is ever printed.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { inspect } from "node:util";

import {
  FailedPreconditionError,
  InvalidArgumentError,
  InvalidTokenError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  StPeterError,
  TotpEnrollment,
  type Authenticated,
  type Client,
  type TwoFactor,
} from "../src/index.js";
import { TestServer, totpCode, wrongTotpCode } from "./harness.js";

const PASSWORD = "knock knock, who goes there";
const NEW_PASSWORD = "correct horse battery staple";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RECOVERY_CODE = /^[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}$/i;

let server: TestServer;
let users = 0;

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  await server?.close();
});

/** A new user of its own for each test (sessions and throttles do not mix); answers the handle. */
function newUser(password = PASSWORD): string {
  const handle = `user-${++users}`;
  server.addUser({ handle, email: `${handle}@bakery.example`, password });
  return handle;
}

async function login(client: Client, identifier: string, password: string): Promise<Authenticated> {
  const result = await client.login(identifier, password);
  assert.equal(result.kind, "authenticated", JSON.stringify(result));
  return result as Authenticated;
}

/** A client without the revocation feed whose answers stay cached for 10 min: only the
 * client's own eviction makes it ask st-peter again. */
function feedlessClient() {
  return server.client({ revocationFeed: false, cacheFallbackTtlMs: 600_000, cacheTtlMs: 600_000 });
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

test("change password: the old one stops working, the new one works, the caller's session stays", async () => {
  const { client } = server.client();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const other = await login(client, handle, PASSWORD);

  assert.equal(await client.account(session.token).changePassword(PASSWORD, NEW_PASSWORD), 0);
  assert.deepEqual(await client.login(handle, PASSWORD), { kind: "failed", reason: "invalid_credentials" });
  await login(client, handle, NEW_PASSWORD);
  // Without revokeOtherSessions both sessions live on.
  assert.equal((await client.verifyToken(session.token)).user.handle, handle);
  assert.equal((await client.verifyToken(other.token)).user.handle, handle);
});

test("change password with revokeOtherSessions ends the others and evicts them from the cache", async () => {
  const { client, counts } = feedlessClient();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const other = await login(client, handle, PASSWORD);
  await client.verifyToken(session.token);
  await client.verifyToken(other.token);
  assert.equal(counts.get("VerifyToken"), 2);

  // The third login counts as an other session too.
  await login(client, handle, PASSWORD);
  const revoked = await client.account(session.token).changePassword(PASSWORD, NEW_PASSWORD, {
    revokeOtherSessions: true,
  });
  assert.equal(revoked, 2);
  await assert.rejects(client.verifyToken(other.token), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 3, "the other token's cached answer was evicted");
  assert.equal((await client.verifyToken(session.token)).user.handle, handle);
});

test("a weak new password is an invalid argument naming new_password", async () => {
  const { client } = server.client();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const account = client.account(session.token);
  for (const weak of ["password1", "knockknock", "short"]) {
    await assert.rejects(account.changePassword(PASSWORD, weak), rejectsWith(InvalidArgumentError, /new_password/));
  }
  // Nothing changed.
  await login(client, handle, PASSWORD);
});

test("a wrong current password is permission denied", async () => {
  const { client } = server.client();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const account = client.account(session.token);
  await assert.rejects(
    account.changePassword("open sesame, said Ali Baba", NEW_PASSWORD),
    rejectsWith(PermissionDeniedError, /current_password/),
  );
  await login(client, handle, PASSWORD);
});

test("wrong current passwords are throttled like failed logins", async () => {
  // A server of its own: the failures count against the loopback address too.
  const own = await TestServer.start();
  try {
    const { client } = own.client();
    own.addUser({ handle: "guesser", password: PASSWORD });
    const account = client.account((await login(client, "guesser", PASSWORD)).token);
    const kinds: string[] = [];
    for (let attempt = 0; attempt < 10 && !kinds.includes("rate_limited"); attempt++) {
      const error = await account.changePassword("open sesame, said Ali Baba", NEW_PASSWORD).then(
        () => assert.fail("a wrong password was accepted"),
        (error: unknown) => error,
      );
      assert.ok(error instanceof PermissionDeniedError || error instanceof RateLimitedError, String(error));
      kinds.push(error.kind);
    }
    assert.equal(kinds[0], "permission_denied");
    assert.equal(kinds.at(-1), "rate_limited", kinds.join(", "));
  } finally {
    await own.close();
  }
});

test("TOTP: enroll, confirm with a real code, log in with two factors, recovery codes, disable", async () => {
  const { client } = server.client();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const account = client.account(session.token);

  const before = await account.get();
  assert.equal(before.user.handle, handle);
  assert.equal(before.user.email, `${handle}@bakery.example`);
  assert.equal(before.user.userId, session.user.userId);
  assert.equal(before.totpEnabled, false);
  assert.equal(before.recoveryCodesLeft, 0);
  await assert.rejects(account.disableTotp(PASSWORD), rejectsWith(FailedPreconditionError, /./));
  await assert.rejects(account.regenerateRecoveryCodes(PASSWORD), rejectsWith(FailedPreconditionError, /./));

  const enrollment = await account.beginTotpEnrollment();
  assert.ok(enrollment instanceof TotpEnrollment);
  assert.match(enrollment.enrollmentId, /^ste_.{43}$/);
  assert.match(enrollment.otpauthUri, /^otpauth:\/\/totp\//);
  assert.equal(enrollment.secret, new URL(enrollment.otpauthUri).searchParams.get("secret"));
  assert.match(enrollment.secret, /^[A-Z2-7]+=*$/);
  assert.ok(enrollment.expiresAt.getTime() > Date.now(), String(enrollment.expiresAt));
  // Not active before the confirmation.
  await login(client, handle, PASSWORD);

  await assert.rejects(
    account.confirmTotpEnrollment(enrollment.enrollmentId, wrongTotpCode(enrollment.otpauthUri)),
    rejectsWith(InvalidArgumentError, /code/),
  );
  const code = totpCode(enrollment.otpauthUri);
  const confirmed = await account.confirmTotpEnrollment(enrollment.enrollmentId, code);
  assert.equal(confirmed.revokedSessions, 0);
  assert.ok(confirmed.recoveryCodes.length > 0);
  for (const recovery of confirmed.recoveryCodes) {
    assert.match(recovery, RECOVERY_CODE);
  }
  assert.equal(new Set(confirmed.recoveryCodes).size, confirmed.recoveryCodes.length);
  // Used: confirming again is a failed precondition naming the enrollment.
  await assert.rejects(
    account.confirmTotpEnrollment(enrollment.enrollmentId, totpCode(enrollment.otpauthUri)),
    rejectsWith(FailedPreconditionError, /enrollment_id/),
  );
  await assert.rejects(account.beginTotpEnrollment(), rejectsWith(FailedPreconditionError, /./));

  const challenge = async (): Promise<TwoFactor> => {
    const result = await client.login(handle, PASSWORD);
    assert.equal(result.kind, "two_factor", JSON.stringify(result));
    const twoFactor = result as TwoFactor;
    assert.deepEqual([...twoFactor.methods].sort(), ["recovery_code", "totp"]);
    return twoFactor;
  };
  // The confirming code is spent.
  assert.deepEqual(await client.verifyTwoFactor((await challenge()).twoFactorId, code), {
    kind: "failed",
    reason: "invalid_code",
  });
  const [first, second] = confirmed.recoveryCodes as [string, string];
  assert.deepEqual(await account.get(), {
    ...before,
    totpEnabled: true,
    recoveryCodesLeft: confirmed.recoveryCodes.length,
  });
  const withRecovery = await client.verifyTwoFactor((await challenge()).twoFactorId, first);
  assert.equal(withRecovery.kind, "authenticated", JSON.stringify(withRecovery));
  assert.equal((await account.get()).recoveryCodesLeft, confirmed.recoveryCodes.length - 1);

  await assert.rejects(
    account.regenerateRecoveryCodes("open sesame, said Ali Baba"),
    rejectsWith(PermissionDeniedError, /current_password/),
  );
  const regenerated = await account.regenerateRecoveryCodes(PASSWORD);
  assert.ok(regenerated.length > 0);
  for (const recovery of regenerated) {
    assert.match(recovery, RECOVERY_CODE);
  }
  assert.deepEqual(await client.verifyTwoFactor((await challenge()).twoFactorId, second), {
    kind: "failed",
    reason: "invalid_code",
  });
  const withNew = await client.verifyTwoFactor((await challenge()).twoFactorId, regenerated[0]!);
  assert.equal(withNew.kind, "authenticated", JSON.stringify(withNew));

  await assert.rejects(account.disableTotp("open sesame, said Ali Baba"), PermissionDeniedError);
  assert.equal((await account.get()).recoveryCodesLeft, regenerated.length - 1);
  await account.disableTotp(PASSWORD);
  assert.deepEqual(await account.get(), before);
  await login(client, handle, PASSWORD);
  await assert.rejects(account.disableTotp(PASSWORD), FailedPreconditionError);
});

test("confirming an unknown enrollment is a failed precondition naming enrollment_id", async () => {
  const { client } = server.client();
  const handle = newUser();
  const account = client.account((await login(client, handle, PASSWORD)).token);
  await assert.rejects(
    account.confirmTotpEnrollment(`ste_${"A".repeat(43)}`, "123456"),
    rejectsWith(FailedPreconditionError, /enrollment_id/),
  );
  // One that is not an enrollment id at all is malformed.
  await assert.rejects(
    account.confirmTotpEnrollment("not-an-enrollment", "123456"),
    rejectsWith(InvalidArgumentError, /enrollment_id/),
  );
});

test("confirm with revokeOtherSessions ends the password-only sessions and evicts them", async () => {
  const { client, counts } = feedlessClient();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  const other = await login(client, handle, PASSWORD);
  await client.verifyToken(session.token);
  await client.verifyToken(other.token);
  const account = client.account(session.token);
  const enrollment = await account.beginTotpEnrollment();
  const confirmed = await account.confirmTotpEnrollment(enrollment.enrollmentId, totpCode(enrollment.otpauthUri), {
    revokeOtherSessions: true,
  });
  assert.equal(confirmed.revokedSessions, 1);
  await assert.rejects(client.verifyToken(other.token), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 3, "the other token's cached answer was evicted");
  assert.equal((await client.verifyToken(session.token)).user.handle, handle);
});

test("sessions: listed newest first with the caller's current; revoke the other by id", async () => {
  const { client, counts } = feedlessClient();
  const handle = newUser();
  const first = await login(client, handle, PASSWORD);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const second = await login(client, handle, PASSWORD);
  // The caller's cached answer tells the client whose sessions end.
  await client.verifyToken(first.token);
  await client.verifyToken(second.token);

  const account = client.account(first.token);
  const sessions = await account.listSessions();
  assert.equal(sessions.length, 2, JSON.stringify(sessions));
  assert.deepEqual(
    sessions.map((session) => session.current),
    [false, true],
    "newest first, the caller's (the older) current",
  );
  for (const session of sessions) {
    assert.match(session.sessionId, UUID);
    assert.ok(session.createdAt instanceof Date && session.expiresAt > session.createdAt);
    assert.ok(session.lastSeenAt === undefined || session.lastSeenAt instanceof Date);
  }
  assert.ok(sessions[0]!.createdAt >= sessions[1]!.createdAt);
  const [theirs, mine] = sessions as [(typeof sessions)[0], (typeof sessions)[0]];
  assert.ok(Math.abs(mine.expiresAt.getTime() - first.expiresAt.getTime()) < 1000);
  assert.ok(Math.abs(theirs.expiresAt.getTime() - second.expiresAt.getTime()) < 1000);
  // A session id is not a token.
  await assert.rejects(client.verifyToken(theirs.sessionId), InvalidTokenError);

  await account.revokeSession(theirs.sessionId);
  await assert.rejects(client.verifyToken(second.token), InvalidTokenError);
  assert.equal(counts.get("VerifyToken"), 4, "the revoked token's cached answer was evicted");
  assert.deepEqual(
    (await account.listSessions()).map((session) => session.sessionId),
    [mine.sessionId],
  );
  // Ended, so unknown now.
  await assert.rejects(account.revokeSession(theirs.sessionId), NotFoundError);
});

test("another user's session id, or an unknown one, is not found", async () => {
  const { client } = server.client();
  const mine = client.account((await login(client, newUser(), PASSWORD)).token);
  const them = newUser();
  const theirToken = (await login(client, them, PASSWORD)).token;
  const [theirs] = await client.account(theirToken).listSessions();
  await assert.rejects(mine.revokeSession(theirs!.sessionId), rejectsWith(NotFoundError, /./));
  await assert.rejects(mine.revokeSession("00000000-0000-4000-8000-000000000000"), NotFoundError);
  // Not a UUID: malformed, not unknown.
  await assert.rejects(mine.revokeSession("not-a-session"), rejectsWith(InvalidArgumentError, /session_id/));
  assert.equal((await client.verifyToken(theirToken)).user.handle, them, "their session lives on");
});

test("revokeOtherSessions ends every session but the caller's", async () => {
  const { client, counts } = feedlessClient();
  const handle = newUser();
  const mine = await login(client, handle, PASSWORD);
  const others = [await login(client, handle, PASSWORD), await login(client, handle, PASSWORD)];
  await client.verifyToken(mine.token);
  for (const other of others) {
    await client.verifyToken(other.token);
  }
  const account = client.account(mine.token);
  assert.equal(await account.revokeOtherSessions(), 2);
  for (const other of others) {
    await assert.rejects(client.verifyToken(other.token), InvalidTokenError);
  }
  assert.equal(counts.get("VerifyToken"), 5, "both cached answers were evicted");
  const left = await account.listSessions();
  assert.equal(left.length, 1);
  assert.equal(left[0]!.current, true);
  assert.equal(await account.revokeOtherSessions(), 0);
});

test("revoking the caller's own session is a logout", async () => {
  const { client } = feedlessClient();
  const handle = newUser();
  const session = await login(client, handle, PASSWORD);
  await client.verifyToken(session.token);
  const account = client.account(session.token);
  const [mine] = await account.listSessions();
  assert.equal(mine!.current, true);
  await account.revokeSession(mine!.sessionId);
  await assert.rejects(client.verifyToken(session.token), InvalidTokenError);
  await assert.rejects(account.listSessions(), InvalidTokenError);
});

test("an account call with a token that is not valid is an invalid token error", async () => {
  const { client } = server.client();
  for (const token of ["", "stp_not-a-real-token"]) {
    const account = client.account(token);
    await assert.rejects(account.listSessions(), InvalidTokenError);
    await assert.rejects(account.get(), InvalidTokenError);
    await assert.rejects(account.changePassword(PASSWORD, NEW_PASSWORD), InvalidTokenError);
  }
});

test("the enrollment's QR code is an SVG and a PNG", async () => {
  const { client } = server.client();
  const account = client.account((await login(client, newUser(), PASSWORD)).token);
  const enrollment = await account.beginTotpEnrollment();
  const svg = await enrollment.qrCodeSvg();
  assert.ok(svg.startsWith("<svg"), svg.slice(0, 40));
  assert.match(svg, /<\/svg>\s*$/);
  assert.match(svg, /<path/);
  const png = await enrollment.qrCodePng();
  assert.ok(png instanceof Uint8Array);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // IHDR: width and height, big-endian, at 16 and 20.
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const big = await enrollment.qrCodePng({ width: 400 });
  const bigView = new DataView(big.buffer, big.byteOffset, big.byteLength);
  assert.equal(bigView.getUint32(16), 400);
  assert.equal(bigView.getUint32(20), 400);
  assert.equal(view.getUint32(16), view.getUint32(20));
});

test("neither the token nor the otpauth URI shows in inspect or JSON output", async () => {
  const { client } = server.client();
  const token = (await login(client, newUser(), PASSWORD)).token;
  const account = client.account(token);
  const enrollment = await account.beginTotpEnrollment();
  const secret = enrollment.secret;
  assert.ok(secret.length >= 16);
  const printed = [
    inspect(account),
    inspect(account, { showHidden: true, getters: true, depth: Infinity }),
    inspect({ account, enrollment }, { showHidden: true, getters: true, depth: Infinity }),
    inspect(enrollment, { showHidden: true, getters: true, depth: Infinity }),
    `${inspect(enrollment)}`,
    JSON.stringify({ account, enrollment }),
    String(account),
    String(enrollment),
  ];
  for (const text of printed) {
    assert.ok(!text.includes(token), text);
    assert.ok(!text.includes(secret), text);
    assert.ok(!text.includes("otpauth://"), text);
  }
  assert.match(inspect(enrollment), new RegExp(enrollment.enrollmentId));
  assert.deepEqual(JSON.parse(JSON.stringify(enrollment)), {
    enrollmentId: enrollment.enrollmentId,
    expiresAt: enrollment.expiresAt.toISOString(),
  });
});
