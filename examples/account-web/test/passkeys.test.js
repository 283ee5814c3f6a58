// Passkeys through the example app in a real browser: Debian's headless Chromium with its
// virtual authenticator (the DevTools WebAuthn domain, through a CDP session of Playwright's),
// against the real st-peter binary started with --webauthn-rp-id localhost and
// --webauthn-origin http://localhost:PORT (the app's own origin, so the app is opened as
// http://localhost:PORT, never 127.0.0.1). One user registers a passkey, signs in with it
// alone and as the second step after the password, and removes it; every test here builds
// on the one before it. Screenshots go to target/account-web-screenshots/passkeys/.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { App, CHROMIUM, StPeter, ensureScreenshotDir, freePort, resetScreenshotDir } from "./support.js";

const HANDLE = "grace";
const DISPLAY_NAME = "Grace Hopper";
const PASSWORD = "a ship in port is safe, but that is not what ships are built for";
const PASSKEY_NAME = "Laptop (Chromium)";
const SESSION_COOKIE = "aura_session";
const SHOTS = "passkeys";

let stPeter;
let app;
let browser;
let context;
let page;
let cdp;
let authenticatorId;
let userId;
let shots = 0;
/** The sign counter of the authenticator's credential after the last step. */
let lastSignCount;
/** Every URL the browser requested, and the secrets seen (tokens, the credential JSON's
 * signatures): none may be in a URL or the app's log. */
const requested = [];
const secrets = new Set();

async function shot(t, name) {
  const dir = ensureScreenshotDir(SHOTS);
  shots += 1;
  const path = join(dir, `${String(shots).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  t.diagnostic(`screenshot: ${path}`);
}

function text(testId) {
  return page.getByTestId(testId).innerText();
}

function path() {
  return new URL(page.url()).pathname;
}

async function sessionCookie() {
  return (await context.cookies()).find((c) => c.name === SESSION_COOKIE);
}

async function signInWithPassword() {
  await page.goto(`${app.url}/login`);
  await page.fill("#identifier", HANDLE);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("[data-testid=login-form] button[type=submit]")]);
}

async function signOut() {
  await Promise.all([page.waitForNavigation(), page.click("[data-testid=logout-form] button[type=submit]")]);
  assert.equal(path(), "/login");
  assert.equal(await sessionCookie(), undefined);
}

/** The virtual authenticator's credentials, as the DevTools protocol gives them. */
async function credentials() {
  return (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials;
}

/** The one credential it holds: resident, for rp id localhost, of this user; its sign
 * counter moved past `lastSignCount` when `advanced`. */
async function theCredential({ advanced }) {
  const all = await credentials();
  assert.equal(all.length, 1, `credentials in the authenticator: ${all.length}`);
  const [credential] = all;
  assert.equal(credential.isResidentCredential, true, "a discoverable (resident) credential");
  assert.equal(credential.rpId, "localhost");
  // st-peter's WebAuthn user handle: the user's id as its 16 UUID bytes.
  assert.equal(Buffer.from(credential.userHandle, "base64").toString("hex"), userId.replaceAll("-", ""));
  if (advanced) {
    assert.ok(credential.signCount > lastSignCount, `sign count ${credential.signCount} after ${lastSignCount}`);
  }
  lastSignCount = credential.signCount;
  return credential;
}

/** Clicks a passkey form's button and answers what its `begin` route sent the page (caught
 * on the way through: the page may have navigated away before it could be read after).
 * With `landsOn`, waits for the page the finishing post leads to and checks it is that URL
 * (else the failure quotes the page's error). */
async function ceremony(formTestId, landsOn) {
  const form = `[data-testid=${formTestId}]`;
  const beginUrl = new URL(await page.locator(form).getAttribute("data-begin"), app.url).href;
  const from = page.url();
  let seen;
  const begun = new Promise((resolve) => {
    seen = resolve;
  });
  await page.route(beginUrl, async (route) => {
    const response = await route.fetch();
    seen({ status: response.status(), body: await response.json() });
    await route.fulfill({ response });
  });
  try {
    const finished = landsOn ? page.waitForURL((url) => url.href !== from) : Promise.resolve();
    await page.click(`${form} button[type=submit]`);
    const answer = await begun;
    await finished;
    if (landsOn) {
      await page.waitForLoadState("load");
      const errors = await page.locator("[data-testid=error], [data-testid=passkey-error]:visible").allInnerTexts();
      assert.equal(page.url(), landsOn, `the ceremony ended on ${page.url()}: ${errors.join(" ") || "no error shown"}`);
    }
    return answer;
  } finally {
    await page.unroute(beginUrl);
  }
}

/** The passkeys listed on the account page: [{ id, name, lastUsed }]. */
async function listed() {
  return page.$$eval("[data-testid=passkey]", (rows) =>
    rows.map((row) => ({
      id: row.getAttribute("data-passkey-id"),
      name: row.querySelector("[data-testid=passkey-name]").textContent.trim(),
      lastUsed: row.querySelector("[data-testid=passkey-last-used]").textContent.trim(),
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
      await shot(t, "failed").catch(() => {});
      throw error;
    }
  });
}

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/lib.sh ensure_chromium)`);
  }
  resetScreenshotDir(SHOTS);
  // The app's origin must be st-peter's WebAuthn origin: pick its port first.
  const port = await freePort();
  stPeter = await StPeter.start(["--webauthn-rp-id", "localhost", "--webauthn-origin", `http://localhost:${port}`]);
  userId = stPeter.addUser({ handle: HANDLE, email: "grace@example.test", displayName: DISPLAY_NAME, password: PASSWORD });
  app = await App.start(stPeter.target, { port, host: "localhost" });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  context = await browser.newContext({ viewport: { width: 1000, height: 1000 } });
  context.setDefaultTimeout(10_000);
  context.on("request", (request) => requested.push(request.url()));
  page = await context.newPage();
  cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  ({ authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  }));
});

after(async () => {
  await browser?.close();
  await app?.close();
  await stPeter?.close();
});

step("register a passkey on the account page: a wrong current password is refused before the browser is asked; then Chromium's authenticator makes a discoverable one and it is listed, never used", async (t) => {
  assert.equal(app.url, `http://localhost:${new URL(app.url).port}`);
  await signInWithPassword();
  assert.equal(path(), "/account");
  assert.equal(await text("who"), DISPLAY_NAME);
  assert.equal(await text("passkey-state"), "You have no passkeys.");
  assert.deepEqual(await listed(), []);
  secrets.add((await sessionCookie()).value);
  await shot(t, "account-no-passkeys");

  await page.fill("#pk_password", "not my password at all");
  await page.fill("#pk_name", PASSKEY_NAME);
  const refused = await ceremony("passkey-register-form");
  assert.equal(refused.status, 403);
  const error = page.locator("[data-testid=passkey-register-form] [data-testid=passkey-error]");
  await error.waitFor({ state: "visible" });
  assert.equal(await error.innerText(), "Your current password is not right.");
  assert.equal(path(), "/account");
  assert.deepEqual(await credentials(), [], "the browser was not asked to make a passkey");
  await shot(t, "register-wrong-password");

  await page.fill("#pk_password", PASSWORD);
  const made = await ceremony("passkey-register-form", `${app.url}/account/passkeys`);
  assert.equal(made.status, 200);
  assert.match(made.body.id, /^stw_[A-Za-z0-9_-]{43}$/);
  const options = made.body.options.publicKey;
  assert.equal(options.rp.id, "localhost");
  assert.equal(options.authenticatorSelection.userVerification, "required");
  assert.deepEqual(await page.locator("[data-testid=error]").allInnerTexts(), [], "st-peter refused the passkey");
  assert.equal(await text("ok"), `Passkey “${PASSKEY_NAME}” registered.`);
  const rows = await listed();
  assert.equal(rows.length, 1, JSON.stringify(rows));
  assert.equal(rows[0].name, PASSKEY_NAME);
  assert.equal(rows[0].lastUsed, "never");
  assert.match(await text("passkey-state"), /^You have 1 passkey\./);
  assert.match(await text("totp-state"), /^No authenticator app is set up\. Sign-ins with your password ask for one of your passkeys/);
  await theCredential({ advanced: false });
  await shot(t, "passkey-registered");
});

step("sign out, then sign in with the passkey alone: nothing typed, a discoverable request, and the account page opens as the user; the sign counter advanced", async (t) => {
  await signOut();
  assert.equal(await page.inputValue("#identifier"), "");
  await shot(t, "login-page");

  const signedIn = await ceremony("passkey-login-form", `${app.url}/account`);
  assert.equal(signedIn.status, 200);
  // Discoverable: no user named, so no credentials listed; user verification required.
  assert.deepEqual(signedIn.body.options.publicKey.allowCredentials ?? [], []);
  assert.equal(signedIn.body.options.publicKey.userVerification, "required");
  assert.equal(path(), "/account");
  assert.equal(await text("who"), DISPLAY_NAME);
  const cookie = await sessionCookie();
  assert.ok(cookie, "a session cookie");
  assert.equal(cookie.httpOnly, true);
  secrets.add(cookie.value);
  await theCredential({ advanced: true });
  // The account page says when the passkey was last used: just now.
  const [row] = await listed();
  assert.notEqual(row.lastUsed, "never");
  const lastUsed = await page.locator("[data-testid=passkey-last-used] time").getAttribute("datetime");
  assert.ok(Math.abs(Date.parse(lastUsed) - Date.now()) < 120_000, `last used ${lastUsed}`);
  await shot(t, "signed-in-with-passkey");
});

step("a password sign-in now asks for a second step offering the passkey (no code form: no TOTP); 'use a passkey' signs in (the page's script without the browser's WebAuthn JSON helpers from here on)", async (t) => {
  // From here on the page's script takes its other path, for browsers without them: it
  // decodes the options' base64url fields and builds the credential's JSON itself.
  await page.addInitScript(() => {
    delete PublicKeyCredential.parseCreationOptionsFromJSON;
    delete PublicKeyCredential.parseRequestOptionsFromJSON;
    delete PublicKeyCredential.prototype.toJSON;
  });
  await signOut();
  assert.deepEqual(
    await page.evaluate(() => [typeof PublicKeyCredential.parseRequestOptionsFromJSON, typeof PublicKeyCredential.prototype.toJSON]),
    ["undefined", "undefined"],
  );
  await signInWithPassword();
  assert.equal(path(), "/login/two-factor");
  assert.equal(await sessionCookie(), undefined, "no session before the second step");
  assert.equal(await page.locator("[data-testid=two-factor-form]").count(), 0, "no TOTP, so no code form");
  assert.equal(await page.locator("[data-testid=two-factor-passkey-form] button").innerText(), "Use a passkey");
  await shot(t, "two-factor-passkey");

  const before = await theCredential({ advanced: false });
  const finished = await ceremony("two-factor-passkey-form", `${app.url}/account`);
  assert.equal(finished.status, 200);
  // The second step of a known user names that user's passkey.
  const allowed = (finished.body.options.publicKey.allowCredentials ?? []).map((c) => c.id);
  assert.deepEqual(allowed, [Buffer.from(before.credentialId, "base64").toString("base64url")]);
  assert.equal(path(), "/account");
  assert.equal(await text("who"), DISPLAY_NAME);
  secrets.add((await sessionCookie()).value);
  await theCredential({ advanced: true });
  await shot(t, "signed-in-two-factor-passkey");
});

step("remove the passkey: a wrong password is refused; then it is gone, the authenticator's copy is refused at sign-in, and the password alone signs in again", async (t) => {
  const [row] = await listed();
  const remove = `[data-testid=passkey][data-passkey-id="${row.id}"] [data-testid=passkey-remove-form]`;
  await page.fill(`${remove} input[name=current_password]`, "still not my password");
  await Promise.all([page.waitForNavigation(), page.click(`${remove} button[type=submit]`)]);
  assert.equal(await page.locator("#passkeys [data-testid=error]").innerText(), "Your current password is not right.");
  assert.equal((await listed()).length, 1);

  await page.fill(`${remove} input[name=current_password]`, PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click(`${remove} button[type=submit]`)]);
  assert.equal(await text("ok"), "The passkey is removed.");
  assert.deepEqual(await listed(), []);
  assert.equal(await text("passkey-state"), "You have no passkeys.");
  assert.equal(await text("totp-state"), "Two-factor authentication is off.");
  await shot(t, "passkey-removed");

  // The authenticator still holds its credential, which st-peter no longer knows.
  await signOut();
  await ceremony("passkey-login-form", `${app.url}/login/passkey`);
  assert.equal(await text("error"), "That passkey was not accepted. It may have been removed from your account.");
  assert.equal(await sessionCookie(), undefined);
  await theCredential({ advanced: true });
  await shot(t, "removed-passkey-refused");

  await signInWithPassword();
  assert.equal(path(), "/account", "no second step any more");
  secrets.add((await sessionCookie()).value);
});

step("register again (the script's own decoding and JSON): the new passkey takes the old one's place in the authenticator and signs in", async (t) => {
  assert.equal(path(), "/account");
  await page.fill("#pk_password", PASSWORD);
  await page.fill("#pk_name", "Laptop again");
  await ceremony("passkey-register-form", `${app.url}/account/passkeys`);
  assert.deepEqual(await page.locator("[data-testid=error]").allInnerTexts(), [], "st-peter refused the passkey");
  assert.equal(await text("ok"), "Passkey “Laptop again” registered.");
  assert.deepEqual((await listed()).map((p) => p.name), ["Laptop again"]);
  // A resident credential for the same site and user replaces the old one.
  await theCredential({ advanced: false });
  await shot(t, "passkey-registered-again");

  await signOut();
  await ceremony("passkey-login-form", `${app.url}/account`);
  assert.equal(await text("who"), DISPLAY_NAME);
  secrets.add((await sessionCookie()).value);
  await theCredential({ advanced: true });
});

step("no token is in any URL or in the app's log; the app logs the passkey routes by path", async () => {
  assert.ok(secrets.size >= 4, `secrets collected: ${secrets.size}`);
  for (const route of ["POST /account/passkeys/begin", "POST /account/passkeys ", "POST /login/passkey ", "POST /login/two-factor/passkey "]) {
    assert.ok(app.log.includes(route), `the app logged ${route.trim()}`);
  }
  for (const secret of secrets) {
    assert.ok(!app.log.includes(secret), "a secret is in the app's log");
    for (const url of requested) {
      assert.ok(!url.includes(secret) && !url.includes(encodeURIComponent(secret)), `a secret in a URL: ${url.slice(0, 40)}`);
    }
  }
});
