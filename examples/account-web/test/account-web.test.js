// The example app in a real browser: Debian's headless Chromium, driven by Playwright
// (playwright-core, no browser download), against the real st-peter binary. One user walks
// through the whole app, step by step; every test here builds on the one before it.
// Screenshots go to target/account-web-screenshots/ and their paths are printed.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import {
  App,
  CHROMIUM,
  StPeter,
  ensureScreenshotDir,
  resetScreenshotDir,
  totpCode,
  totpStep,
  wrongTotpCode,
} from "./support.js";

const HANDLE = "ada";
const FIRST_PASSWORD = "knock knock, who goes there";
const WEAK_PASSWORD = "password1";
const NEW_PASSWORD = "correct horse battery staple";
const SESSION_COOKIE = "aura_session";

let stPeter;
let app;
let browser;
/** The user's main browser (context "laptop") and its page. */
let laptop;
let page;
let shots = 0;
/** Every URL any browser context requested, to check no token ever went into one. */
const requested = [];
/** Secrets seen along the way (tokens, the TOTP secret, recovery codes): none may be logged. */
const secrets = new Set();
let totpSecret;
let confirmedStep;
let recoveryCodes = [];

async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  context.setDefaultTimeout(10_000);
  context.on("request", (request) => requested.push(request.url()));
  return context;
}

/** A full-page screenshot, named in order; its path goes to the test's output. */
async function shot(t, on, name) {
  const dir = ensureScreenshotDir();
  shots += 1;
  const path = join(dir, `${String(shots).padStart(2, "0")}-${name}.png`);
  await on.screenshot({ path, fullPage: true });
  t.diagnostic(`screenshot: ${path}`);
  return path;
}

async function sessionCookie(context) {
  const cookies = await context.cookies();
  return cookies.find((c) => c.name === SESSION_COOKIE);
}

function text(on, testId) {
  return on.getByTestId(testId).innerText();
}

async function signIn(on, identifier, password) {
  await on.goto(`${app.url}/login`);
  await on.fill("#identifier", identifier);
  await on.fill("#password", password);
  await Promise.all([on.waitForLoadState("load"), on.click("[data-testid=login-form] button[type=submit]")]);
}

async function submit(on, formTestId) {
  await Promise.all([on.waitForNavigation(), on.click(`[data-testid=${formTestId}] button[type=submit]`)]);
}

/** The account page's two-factor state line; with TOTP on, only the recovery-codes and
 * turn-off forms are there, with it off only the setup form. */
async function totpState(on) {
  const state = await text(on, "totp-state");
  const forms = {
    begin: await on.locator("[data-testid=totp-begin-form]").count(),
    recoveryCodes: await on.locator("[data-testid=recovery-codes-form]").count(),
    disable: await on.locator("[data-testid=totp-disable-form]").count(),
  };
  const enabled = state.startsWith("Two-factor authentication is on");
  assert.deepEqual(forms, enabled ? { begin: 0, recoveryCodes: 1, disable: 1 } : { begin: 1, recoveryCodes: 0, disable: 0 }, state);
  return state;
}

function codesLeft(n) {
  return `Two-factor authentication is on — ${n} recovery ${n === 1 ? "code" : "codes"} left`;
}

const TOTP_OFF = "Two-factor authentication is off.";

/** The sessions table of the account page: [{ id, current, thisDevice }]. */
async function sessionRows(on) {
  return on.$$eval("[data-testid=session]", (rows) =>
    rows.map((row) => ({
      id: row.getAttribute("data-session-id"),
      current: row.getAttribute("data-current") === "true",
      thisDevice: row.innerText.includes("this device"),
      times: row.querySelectorAll("time").length,
    })),
  );
}

/** The steps build on each other: after one fails, the rest fail at once (not skipped). */
let failedStep;
function step(name, body) {
  test(name, async (t) => {
    if (failedStep) {
      throw new Error(`not run: an earlier step failed (${failedStep})`);
    }
    try {
      await body(t);
    } catch (error) {
      failedStep = name;
      await shot(t, page, "failed").catch(() => {});
      throw error;
    }
  });
}

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/lib.sh ensure_chromium)`);
  }
  resetScreenshotDir();
  stPeter = await StPeter.start();
  stPeter.addUser({ handle: HANDLE, email: "ada@example.test", displayName: "Ada Lovelace", password: FIRST_PASSWORD });
  app = await App.start(stPeter.target);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  laptop = await newContext();
  page = await laptop.newPage();
});

after(async () => {
  await browser?.close();
  await app?.close();
  await stPeter?.close();
});

step("sign in: a wrong password is refused on the page; the right one opens the account page with an HttpOnly, SameSite=Strict cookie", async (t) => {
  await page.goto(`${app.url}/`);
  assert.equal(new URL(page.url()).pathname, "/login");
  await shot(t, page, "login");
  // "Sign in with a passkey" from a st-peter without WebAuthn settings: refused in words.
  await page.click("[data-testid=passkey-login-form] button[type=submit]");
  const noPasskeys = page.locator("[data-testid=passkey-login-form] [data-testid=passkey-error]");
  await noPasskeys.waitFor({ state: "visible" });
  assert.equal(await noPasskeys.innerText(), "Passkeys are not available on this sign-in service.");

  await signIn(page, HANDLE, "not the password at all");
  assert.equal(new URL(page.url()).pathname, "/login");
  assert.equal(await text(page, "error"), "Wrong identifier or password.");
  assert.equal(await sessionCookie(laptop), undefined);

  await signIn(page, "ADA@example.test", FIRST_PASSWORD);
  assert.equal(new URL(page.url()).pathname, "/account");
  assert.equal(await text(page, "who"), "Ada Lovelace");
  const cookie = await sessionCookie(laptop);
  assert.ok(cookie, "a session cookie");
  assert.match(cookie.value, /^stp_/);
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  secrets.add(cookie.value);
  // Not readable from the page's scripts.
  assert.equal(await page.evaluate(() => document.cookie.includes("stp_")), false);
  // This st-peter runs without WebAuthn settings (test/passkeys.test.js has them): it lists
  // no passkeys, and registering one is refused in words (before the password is checked).
  assert.equal(await text(page, "passkey-state"), "You have no passkeys.");
  await page.fill("#pk_password", FIRST_PASSWORD);
  await page.fill("#pk_name", "laptop");
  await page.click("[data-testid=passkey-register-form] button[type=submit]");
  const cannotRegister = page.locator("[data-testid=passkey-register-form] [data-testid=passkey-error]");
  await cannotRegister.waitFor({ state: "visible" });
  assert.equal(await cannotRegister.innerText(), "Passkeys are not available on this sign-in service.");
  await shot(t, page, "account");
});

step("change password: a weak one is refused with its reason, a wrong current one too; then the new one works and the old one no longer signs in", async (t) => {
  await page.fill("#current_password", FIRST_PASSWORD);
  await page.fill("#new_password", WEAK_PASSWORD);
  await submit(page, "password-form");
  const weak = await page.locator("#password [data-testid=error]").innerText();
  assert.match(weak, /^The new password (is |was refused: )\S/);
  // st-peter's reason, not just a generic "no".
  assert.ok(weak.length > "The new password was refused: ".length + 10, weak);
  t.diagnostic(`weak password refusal: ${weak}`);
  await shot(t, page, "password-weak-refused");

  await page.fill("#current_password", "this is not my password");
  await page.fill("#new_password", NEW_PASSWORD);
  await submit(page, "password-form");
  assert.equal(await page.locator("#password [data-testid=error]").innerText(), "Your current password is not right.");
  await shot(t, page, "password-wrong-current");

  await page.fill("#current_password", FIRST_PASSWORD);
  await page.fill("#new_password", NEW_PASSWORD);
  await submit(page, "password-form");
  assert.equal(await text(page, "ok"), "Password changed.");
  assert.equal(await page.locator("[data-testid=error]").count(), 0);
  await shot(t, page, "password-changed");

  // The old password fails at login now (in another browser, so this one stays signed in).
  const other = await newContext();
  const otherPage = await other.newPage();
  await signIn(otherPage, HANDLE, FIRST_PASSWORD);
  assert.equal(new URL(otherPage.url()).pathname, "/login");
  assert.equal(await text(otherPage, "error"), "Wrong identifier or password.");
  await shot(t, otherPage, "old-password-refused");
  await other.close();

  // This browser's session survived the change (no "sign out other devices").
  await page.goto(`${app.url}/account`);
  assert.equal(new URL(page.url()).pathname, "/account");
});

step("enroll TOTP: a QR code and the key, a wrong code refused, the right one turns it on and shows the recovery codes once", async (t) => {
  // Off so far: the setup form only.
  assert.equal(await totpState(page), TOTP_OFF);
  await submit(page, "totp-begin-form");
  assert.equal(await page.locator("h1").innerText(), "Set up an authenticator app");
  const qr = page.locator("[data-testid=qr] svg");
  assert.equal(await qr.count(), 1, "the QR code is an inline SVG");
  const box = await qr.boundingBox();
  assert.ok(box && box.width > 100 && box.height > 100, `the QR code is drawn (${JSON.stringify(box)})`);
  assert.ok((await page.locator("[data-testid=qr] svg path").count()) > 0);
  totpSecret = (await text(page, "totp-secret")).trim();
  assert.match(totpSecret, /^[A-Z2-7]{16,}=*$/);
  secrets.add(totpSecret);
  await shot(t, page, "totp-enroll-qr");

  await page.fill("#code", wrongTotpCode(totpSecret));
  await submit(page, "totp-confirm-form");
  assert.match(await text(page, "error"), /^That code is not right/);
  // The same enrollment is shown again, so the user can retry.
  assert.equal((await text(page, "totp-secret")).trim(), totpSecret);
  await shot(t, page, "totp-wrong-code");

  confirmedStep = totpStep();
  await page.fill("#code", totpCode(totpSecret, confirmedStep));
  await submit(page, "totp-confirm-form");
  assert.equal(await page.locator("h1").innerText(), "Recovery codes");
  assert.match(await text(page, "ok"), /^Two-factor authentication is on\./);
  recoveryCodes = await page.$$eval("[data-testid=recovery-codes] code", (codes) => codes.map((c) => c.textContent.trim()));
  assert.ok(recoveryCodes.length >= 5, `recovery codes: ${recoveryCodes.length}`);
  for (const code of recoveryCodes) {
    assert.match(code, /^[a-z0-9]{4}(-[a-z0-9]{4}){3}$/i);
    secrets.add(code);
  }
  await shot(t, page, "totp-recovery-codes");

  // Shown once: the account page does not show them again.
  await page.goto(`${app.url}/account`);
  const body = await page.locator("body").innerText();
  for (const code of recoveryCodes) {
    assert.ok(!body.includes(code));
  }
  // On now, with every recovery code left: new codes and turn-off, no setup button.
  assert.equal(recoveryCodes.length, 10);
  assert.equal(await totpState(page), codesLeft(10));
  await shot(t, page, "account-totp-on");
  // A second enrollment (a form from a stale tab) is refused while TOTP is on, in words.
  const stale = await fetch(`${app.url}/account/totp/begin`, {
    method: "POST",
    headers: {
      cookie: `${SESSION_COOKIE}=${(await sessionCookie(laptop)).value}`,
      origin: app.url,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({
      csrf: await page.locator("[data-testid=recovery-codes-form] input[name=csrf]").getAttribute("value"),
    }).toString(),
    redirect: "manual",
  });
  assert.equal(stale.status, 409);
  assert.match(await stale.text(), /already on/);
});

step("log out; signing in again needs the two-factor step: a wrong code is refused, a TOTP code completes it", async (t) => {
  await submit(page, "logout-form");
  assert.equal(new URL(page.url()).pathname, "/login");
  assert.equal(await text(page, "ok"), "You are signed out.");
  assert.equal(await sessionCookie(laptop), undefined);
  await page.goto(`${app.url}/account`);
  assert.equal(new URL(page.url()).pathname, "/login", "signed out: the account page sends to login");

  await signIn(page, HANDLE, NEW_PASSWORD);
  assert.equal(new URL(page.url()).pathname, "/login/two-factor");
  assert.equal(await sessionCookie(laptop), undefined, "no session before the second factor");
  await shot(t, page, "two-factor-step");

  await page.fill("#code", wrongTotpCode(totpSecret));
  await submit(page, "two-factor-form");
  assert.equal(new URL(page.url()).pathname, "/login/two-factor");
  assert.match(await text(page, "error"), /^That code is not right/);

  // The confirming code was spent (st-peter refuses a replay): a later step's code.
  await page.fill("#code", totpCode(totpSecret, Math.max(totpStep(), confirmedStep + 1)));
  await submit(page, "two-factor-form");
  assert.equal(new URL(page.url()).pathname, "/account");
  assert.equal(await text(page, "who"), "Ada Lovelace");
  // A TOTP code spends no recovery code.
  assert.equal(await totpState(page), codesLeft(10));
  secrets.add((await sessionCookie(laptop)).value);
  await shot(t, page, "signed-in-with-totp");
});

step("sessions: a second browser (signed in with a recovery code) is listed; this device is marked; revoking the other logs it out on its next page load", async (t) => {
  const phone = await newContext();
  const phonePage = await phone.newPage();
  await signIn(phonePage, HANDLE, NEW_PASSWORD);
  assert.equal(new URL(phonePage.url()).pathname, "/login/two-factor");
  await phonePage.fill("#code", recoveryCodes[0]);
  await submit(phonePage, "two-factor-form");
  assert.equal(new URL(phonePage.url()).pathname, "/account");
  secrets.add((await sessionCookie(phone)).value);

  await page.reload();
  // The phone spent one recovery code.
  assert.equal(await totpState(page), codesLeft(9));
  const rows = await sessionRows(page);
  assert.equal(rows.length, 2, JSON.stringify(rows));
  const mine = rows.filter((r) => r.current);
  assert.equal(mine.length, 1);
  assert.ok(mine[0].thisDevice);
  const other = rows.find((r) => !r.current);
  assert.ok(!other.thisDevice);
  assert.ok(other.times >= 2, "created and expires are shown");
  // Newest first: the phone signed in last.
  assert.equal(rows[0].id, other.id);
  // The phone sees the same two sessions, with itself as this device.
  await phonePage.reload();
  const phoneRows = await sessionRows(phonePage);
  assert.deepEqual(phoneRows.map((r) => r.id).sort(), rows.map((r) => r.id).sort());
  assert.equal(phoneRows.find((r) => r.current).id, other.id);
  await shot(t, page, "sessions-two");

  await Promise.all([
    page.waitForNavigation(),
    page.click(`[data-testid=session][data-session-id="${other.id}"] [data-testid=revoke-session]`),
  ]);
  assert.equal(await text(page, "ok"), "That session is signed out.");
  const left = await sessionRows(page);
  assert.deepEqual(left.map((r) => r.id), [mine[0].id]);
  await shot(t, page, "sessions-other-revoked");

  await phonePage.reload();
  assert.equal(new URL(phonePage.url()).pathname, "/login");
  assert.equal(await text(phonePage, "ok"), "Your session ended. Please sign in again.");
  assert.equal(await sessionCookie(phone), undefined, "the dead cookie is cleared");
  await shot(t, phonePage, "revoked-browser-logged-out");
  await phone.close();
});

step("sign out everywhere else; a form posted from another origin or without the CSRF token is refused", async (t) => {
  const tablet = await newContext();
  const tabletPage = await tablet.newPage();
  await signIn(tabletPage, HANDLE, NEW_PASSWORD);
  await tabletPage.fill("#code", recoveryCodes[1]);
  await submit(tabletPage, "two-factor-form");
  assert.equal(new URL(tabletPage.url()).pathname, "/account");
  secrets.add((await sessionCookie(tablet)).value);

  // Another origin (same site: 127.0.0.1, another port, so SameSite=Strict still sends the
  // cookie) auto-posts "sign out everywhere else" in the user's browser.
  const evil = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><form method="post" action="${app.url}/account/sessions/revoke-others">
      <input type="hidden" name="csrf" value="guess"></form><script>document.forms[0].submit()</script>`);
  });
  await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
  try {
    const evilPage = await laptop.newPage();
    await evilPage.goto(`http://127.0.0.1:${evil.address().port}/`);
    await evilPage.waitForURL(`${app.url}/account/sessions/revoke-others`);
    assert.match(await text(evilPage, "error"), /another site/);
    await shot(t, evilPage, "csrf-cross-origin-refused");
    await evilPage.close();
  } finally {
    evil.close();
  }
  // Without an Origin header but with a wrong token: refused too.
  const cookie = await sessionCookie(laptop);
  const forged = await fetch(`${app.url}/account/sessions/revoke-others`, {
    method: "POST",
    headers: { cookie: `${SESSION_COOKIE}=${cookie.value}`, "content-type": "application/x-www-form-urlencoded" },
    body: "csrf=guess",
    redirect: "manual",
  });
  assert.equal(forged.status, 403);
  await page.reload();
  assert.equal((await sessionRows(page)).length, 2, "nothing was revoked");
  // The tablet spent a second recovery code.
  assert.equal(await totpState(page), codesLeft(8));

  await submit(page, "revoke-others-form");
  assert.equal(await text(page, "ok"), "Signed out everywhere else (1 session).");
  assert.equal((await sessionRows(page)).length, 1);
  await shot(t, page, "signed-out-everywhere-else");
  await tabletPage.reload();
  assert.equal(new URL(tabletPage.url()).pathname, "/login");
  await tablet.close();
});

step("new recovery codes replace the old ones; turning TOTP off needs the current password, then the password alone signs in", async (t) => {
  await page.goto(`${app.url}/account`);
  assert.equal(await totpState(page), codesLeft(8));
  await page.fill("#rc_password", NEW_PASSWORD);
  await submit(page, "recovery-codes-form");
  assert.equal(await page.locator("h1").innerText(), "Recovery codes");
  const fresh = await page.$$eval("[data-testid=recovery-codes] code", (codes) => codes.map((c) => c.textContent.trim()));
  assert.equal(fresh.length, recoveryCodes.length);
  assert.equal(fresh.filter((code) => recoveryCodes.includes(code)).length, 0, "all new");
  fresh.forEach((code) => secrets.add(code));
  await shot(t, page, "recovery-codes-regenerated");

  // An old (unused) recovery code no longer completes a sign-in.
  const other = await newContext();
  const otherPage = await other.newPage();
  await signIn(otherPage, HANDLE, NEW_PASSWORD);
  await otherPage.fill("#code", recoveryCodes[2]);
  await submit(otherPage, "two-factor-form");
  assert.equal(new URL(otherPage.url()).pathname, "/login/two-factor");
  assert.match(await text(otherPage, "error"), /^That code is not right/);

  await page.goto(`${app.url}/account`);
  // A full set again, and the refused old code spent none of it.
  assert.equal(await totpState(page), codesLeft(10));
  await page.fill("#dis_password", NEW_PASSWORD);
  await submit(page, "totp-disable-form");
  assert.match(await text(page, "ok"), /^Two-factor authentication is off\./);
  // Off again: the setup form only.
  assert.equal(await totpState(page), TOTP_OFF);
  await shot(t, page, "totp-disabled");

  await signIn(otherPage, HANDLE, NEW_PASSWORD);
  assert.equal(new URL(otherPage.url()).pathname, "/account", "no two-factor step any more");
  secrets.add((await sessionCookie(other)).value);
  await other.close();
});

step("no token, TOTP secret or recovery code is in any URL or in the app's log", async () => {
  assert.ok(secrets.size >= 5, `secrets collected: ${secrets.size}`);
  assert.ok(app.log.includes("POST /account/password"), "the app logs its requests");
  for (const secret of secrets) {
    assert.ok(!app.log.includes(secret), "a secret is in the app's log");
    for (const url of requested) {
      assert.ok(!url.includes(secret) && !url.includes(encodeURIComponent(secret)), `a secret in a URL: ${url.slice(0, 40)}`);
    }
  }
});
