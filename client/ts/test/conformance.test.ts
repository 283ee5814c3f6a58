// The shared conformance cases (proto/conformance/cases.json), run against a real server.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";

import { StPeterError, type Client, type LoginResult, type User } from "../src/index.js";
import { TestServer, totpCode, wrongTotpCode } from "./harness.js";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Ref = { [key: string]: string };
type Value = string | Ref;

interface CaseUser {
  handle: string;
  email?: string;
  phone?: string;
  display_name?: string;
  password: string;
  roles?: string[];
  totp?: boolean;
  disabled?: boolean;
}

interface Case {
  name: string;
  call: "login" | "verify_two_factor" | "verify_token" | "lookup_user" | "logout";
  input: Record<string, Value>;
  expect: { [key: string]: Json };
}

const file = JSON.parse(
  readFileSync(new URL("../../../../proto/conformance/cases.json", import.meta.url), "utf8"),
) as { users: CaseUser[]; cases: Case[] };

let server: TestServer;
let client: Client;
const userIds = new Map<string, string>();
const totpUris = new Map<string, string>();

before(async () => {
  server = await TestServer.start();
  for (const user of file.users) {
    userIds.set(
      user.handle,
      server.addUser({
        handle: user.handle,
        email: user.email,
        phone: user.phone,
        displayName: user.display_name,
        password: user.password,
      }),
    );
    for (const role of user.roles ?? []) {
      server.grantRole(user.handle, role);
    }
    if (user.totp) {
      totpUris.set(user.handle, server.enrollTotp(user.handle));
    }
    if (user.disabled) {
      server.disable(user.handle);
    }
  }
  client = server.client().client;
});

after(async () => {
  await server?.close();
});

function caseUser(handle: string): CaseUser {
  const user = file.users.find((u) => u.handle === handle);
  assert.ok(user, `no user ${handle} in cases.json`);
  return user;
}

async function loginOf(handle: string): Promise<LoginResult> {
  return client.login(handle, caseUser(handle).password);
}

async function resolve(value: Value): Promise<string> {
  if (typeof value === "string") {
    return value;
  }
  const [[kind, handle]] = Object.entries(value) as [[string, string]];
  switch (kind) {
    case "user_id_of":
      return userIds.get(handle)!;
    case "token_of":
    case "logged_out_token_of": {
      const result = await loginOf(handle);
      assert.equal(result.kind, "authenticated", `setup: login of ${handle}`);
      const token = result.kind === "authenticated" ? result.token : "";
      if (kind === "logged_out_token_of") {
        await client.logout(token);
      }
      return token;
    }
    case "challenge_of": {
      const result = await loginOf(handle);
      assert.equal(result.kind, "two_factor", `setup: login of ${handle}`);
      return result.kind === "two_factor" ? result.twoFactorId : "";
    }
    case "totp_code_of":
      return totpCode(totpUris.get(handle)!);
    case "wrong_totp_code_of":
      return wrongTotpCode(totpUris.get(handle)!);
    default:
      throw new Error(`unknown reference ${kind}`);
  }
}

/** What the client answered, in the vocabulary of cases.json. */
type Outcome = { result: string; user?: User; roles?: string[]; methods?: string[]; reason?: string; retryAfterMs?: number; expiresAt?: Date };

async function call(c: Case, input: Record<string, string>): Promise<Outcome> {
  const fromLogin = (r: LoginResult): Outcome => {
    switch (r.kind) {
      case "authenticated":
        return { result: "authenticated", user: r.user, expiresAt: r.expiresAt };
      case "two_factor":
        return { result: "two_factor", methods: r.methods, expiresAt: r.expiresAt };
      case "failed":
        return { result: "failed", reason: r.reason, retryAfterMs: r.retryAfterMs };
    }
  };
  switch (c.call) {
    case "login":
      return fromLogin(await client.login(input.identifier!, input.password!));
    case "verify_two_factor":
      return fromLogin(await client.verifyTwoFactor(input.two_factor_id!, input.code!));
    case "verify_token": {
      const v = await client.verifyToken(input.token!);
      return { result: "verified", user: v.user, roles: v.roles, expiresAt: v.expiresAt };
    }
    case "lookup_user":
      return { result: "user", user: await client.lookupUser(input.actor_id!, input.actor_token!, input.identifier!) };
    case "logout":
      await client.logout(input.token!);
      return { result: "ok" };
  }
}

const userFields: Record<string, keyof User> = {
  user_id: "userId",
  handle: "handle",
  email: "email",
  phone: "phone",
  display_name: "displayName",
  disabled: "disabled",
  kind: "kind",
};

for (const c of file.cases) {
  test(`conformance: ${c.name}`, async () => {
    const input: Record<string, string> = {};
    for (const [key, value] of Object.entries(c.input)) {
      input[key] = await resolve(value);
    }
    let outcome: Outcome;
    try {
      outcome = await call(c, input);
    } catch (error) {
      assert.ok(error instanceof StPeterError, `not a StPeterError: ${error}`);
      assert.equal(error.kind, c.expect.error, `answered ${error.kind}: ${error.message}`);
      if (typeof c.expect.message === "string") {
        assert.equal(error.detail, c.expect.message);
      }
      return;
    }
    assert.equal(c.expect.error, undefined, `expected error ${c.expect.error}, got ${JSON.stringify(outcome)}`);
    assert.equal(outcome.result, c.expect.result);
    const expectedUser = c.expect.user as Record<string, Value | boolean | null> | undefined;
    for (const [key, want] of Object.entries(expectedUser ?? {})) {
      const field = userFields[key];
      assert.ok(field, `unknown user field ${key}`);
      const got = outcome.user?.[field];
      if (want === null) {
        assert.equal(got, undefined, `user.${key}`);
      } else if (typeof want === "boolean") {
        assert.equal(got, want, `user.${key}`);
      } else {
        assert.equal(got, await resolve(want), `user.${key}`);
      }
    }
    if ("roles" in c.expect) assert.deepEqual(outcome.roles, c.expect.roles);
    for (const method of (c.expect.methods_include as string[] | undefined) ?? []) {
      assert.ok(outcome.methods?.includes(method), `methods ${outcome.methods} lack ${method}`);
    }
    if ("reason" in c.expect) assert.equal(outcome.reason, c.expect.reason);
    if (c.expect.retry_after === null) assert.equal(outcome.retryAfterMs, undefined);
    if (["authenticated", "two_factor", "verified"].includes(outcome.result)) {
      assert.ok(outcome.expiresAt && outcome.expiresAt.getTime() > Date.now(), "expires in the future");
    }
  });
}
