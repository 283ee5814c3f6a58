import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { bearer, SESSION_COOKIE, tokenFromHeaders, tokenFromRequest, VERSION } from "../src/index.js";
import { totpCode, wrongTotpCode } from "./harness.js";

test("bearer and the session cookie", () => {
  assert.equal(bearer("stp_x"), "Bearer stp_x");
  assert.equal(SESSION_COOKIE, "aura_session");
  const cases: [string | undefined, string | undefined, string | undefined][] = [
    ["Bearer stp_a", "aura_session=stp_b", "stp_a"],
    ["bearer  stp_a ", undefined, "stp_a"],
    ["Basic abc", "aura_session=stp_b", "stp_b"],
    [undefined, "theme=dark; aura_session=stp_b; x=y", "stp_b"],
    [undefined, 'aura_session="stp_q"', "stp_q"],
    [undefined, "aura_session_old=stp_c", undefined],
    ["Bearer ", undefined, undefined],
    [undefined, undefined, undefined],
  ];
  for (const [authorization, cookie, want] of cases) {
    assert.equal(tokenFromHeaders(authorization, cookie), want, `${authorization} / ${cookie}`);
  }
});

test("tokens from Node and Fetch request headers", () => {
  assert.equal(tokenFromRequest({ headers: { cookie: "theme=dark; aura_session=stp_b" } }), "stp_b");
  assert.equal(tokenFromRequest({ headers: { authorization: "Bearer stp_a", cookie: "aura_session=stp_b" } }), "stp_a");
  assert.equal(tokenFromRequest({ headers: new Headers({ cookie: "aura_session=stp_c" }) }), "stp_c");
  assert.equal(tokenFromRequest({ headers: new Headers() }), undefined);
});

test("the TOTP helper matches RFC 6238", () => {
  // RFC 6238 appendix B, SHA-1 secret "12345678901234567890" at T = 59 s: 94287082.
  const uri = "otpauth://totp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
  assert.equal(totpCode(uri, 59_000), "287082");
  assert.notEqual(wrongTotpCode(uri, 59_000), "287082");
});

test("VERSION is the package version", () => {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
  assert.equal(VERSION, pkg.version);
});
