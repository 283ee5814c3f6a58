// A small consuming web app of st-peter: log in (with the two-factor step when st-peter asks
// for it, with a passkey too), and an account page where the user changes their password,
// turns on TOTP (QR code, confirmation, recovery codes shown once), registers and removes
// passkeys, and sees and ends their sessions; and sign-in with a passkey alone. Every
// st-peter call goes through the TypeScript client (@st-peter/client).
//
// Passkeys: the app relays the WebAuthn ceremony. The page's script (src/browser/passkeys.js,
// served as /passkeys.js) posts to a `.../begin` route, which asks st-peter to begin and
// answers its options JSON with the ceremony's id; the browser makes or uses the passkey and
// the script posts its answer with an ordinary form to the finishing route, which hands it
// to st-peter and answers with a page like every other form.
//
// The session token lives only in an HttpOnly, SameSite=Strict cookie: never in a URL, a
// page or a log line. Every POST form carries a CSRF token (an HMAC of the session token, or
// before login of a random pre-session cookie, under a key of this process), and a POST
// whose Origin (or Sec-Fetch-Site) says it came from another site is refused as well.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

import { SESSION_COOKIE, passkeyCredentialJson, tokenFromHeaders } from "@st-peter/client";

import { STYLE, csrfField, esc, html, message, page, raw, when } from "./html.js";

/** The pending two-factor challenge of a login (its id, not a token) and the methods st-peter
 * offered for it (`ID:totp+recovery_code+passkey`), for /login/two-factor. */
const TWO_FACTOR_COOKIE = "account_2fa";
/** A random value the login and two-factor forms' CSRF tokens are bound to before there is a session. */
const PRE_SESSION_COOKIE = "account_pre";
const MAX_BODY_BYTES = 16 * 1024;
/** The finishing posts of a passkey carry the browser's credential (st-peter takes up to
 * 64 KiB of JSON), form-encoded. */
const MAX_PASSKEY_BODY_BYTES = 256 * 1024;
const PASSKEY_FINISH_PATHS = new Set(["/login/passkey", "/login/two-factor/passkey", "/account/passkeys"]);
const PASSKEY_SCRIPT = readFileSync(new URL("./browser/passkeys.js", import.meta.url), "utf8");
const PASSKEY_PAGE = { scripts: ["/passkeys.js"] };
/** The gRPC status of a call the server does not know (a st-peter older than passkeys). */
const GRPC_UNIMPLEMENTED = 12;
/** A passkey's name, as st-peter takes it: 1 to 100 characters. */
const MAX_PASSKEY_NAME = 100;
const MAX_PENDING_ENROLLMENTS = 1000;

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  // Not no-referrer: with it Chromium sends `Origin: null` on same-origin form posts.
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
};

class HttpError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

/**
 * The app's request listener, for `http.createServer(createApp({ stPeter }))`.
 *
 * - `stPeter`: a client from `connect()` of @st-peter/client (the caller closes it).
 * - `csrfKey`: key of the CSRF tokens' HMAC (default: 32 random bytes; give every instance
 *   behind one load balancer the same key).
 * - `secureCookies`: add `Secure` to the cookies (do, when served over HTTPS).
 * - `log`: where the request lines go (default console.log). A line is the method, the path
 *   (never the query) and the status: no token, secret or code is ever logged.
 */
export function createApp({ stPeter, csrfKey = randomBytes(32), secureCookies = false, log = console.log }) {
  /** enrollment id -> { enrollment, userId, expiresAt }: a pending TOTP enrollment, kept so
   * a wrong confirmation code can show its QR code again. */
  const pending = new Map();

  function csrfToken(binding) {
    return createHmac("sha256", csrfKey).update(`csrf\0${binding}`).digest("base64url");
  }

  function csrfValid(binding, given) {
    if (!binding || typeof given !== "string") {
      return false;
    }
    const want = Buffer.from(csrfToken(binding));
    const got = Buffer.from(given);
    return want.length === got.length && timingSafeEqual(want, got);
  }

  function cookie(name, value, { path = "/", maxAgeSeconds } = {}) {
    let text = `${name}=${value}; Path=${path}; HttpOnly; SameSite=Strict`;
    if (maxAgeSeconds !== undefined) {
      text += `; Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`;
    }
    if (secureCookies) {
      text += "; Secure";
    }
    return text;
  }

  function clearCookie(name, path = "/") {
    return cookie(name, "", { path, maxAgeSeconds: 0 });
  }

  function secondsUntil(date) {
    return (date.getTime() - Date.now()) / 1000;
  }

  // ---- responses ----

  function send(res, status, body, headers = {}) {
    res.writeHead(status, { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8", ...headers });
    res.end(body);
  }

  /** The answer of a passkey `begin` route to the page's script: `{ id, options }` or `{ error }`. */
  function sendJson(res, status, value) {
    res.writeHead(status, { ...SECURITY_HEADERS, "content-type": "application/json; charset=utf-8" });
    res.end(JSON.stringify(value));
  }

  function redirect(res, location, cookies = []) {
    res.writeHead(303, { ...SECURITY_HEADERS, location, "set-cookie": cookies });
    res.end();
  }

  // ---- who is asking ----

  function cookies(req) {
    const out = new Map();
    for (const pair of (req.headers.cookie ?? "").split(";")) {
      const eq = pair.indexOf("=");
      if (eq > 0) {
        out.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
      }
    }
    return out;
  }

  /** The session token from the cookie only: a browser app takes no bearer header. */
  function sessionToken(req) {
    return tokenFromHeaders(undefined, req.headers.cookie);
  }

  /** The signed-in user of the request, or undefined (the token is missing or not valid). */
  async function signedIn(req) {
    const token = sessionToken(req);
    if (!token) {
      return undefined;
    }
    try {
      const verified = await stPeter.verifyToken(token);
      return { token, user: verified.user, csrf: csrfToken(token) };
    } catch (error) {
      if (error?.kind === "invalid_token") {
        return undefined;
      }
      throw error;
    }
  }

  /** Sends the visitor to the login page, forgetting a session cookie that stopped working. */
  function toLogin(req, res, done) {
    const clear = sessionToken(req) ? [clearCookie(SESSION_COOKIE)] : [];
    redirect(res, done ? `/login?done=${done}` : "/login", clear);
  }

  /** A POST must come from this app's own pages: same origin, and the right CSRF token. */
  function sameOrigin(req) {
    const origin = req.headers.origin;
    if (origin !== undefined) {
      const host = req.headers.host;
      return origin === `http://${host}` || origin === `https://${host}`;
    }
    const site = req.headers["sec-fetch-site"];
    if (site !== undefined) {
      return site === "same-origin" || site === "none";
    }
    // A client that sends neither (an old browser, a script): the CSRF token decides.
    return true;
  }

  async function readForm(req, maxBytes = MAX_BODY_BYTES) {
    const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "application/x-www-form-urlencoded") {
      throw new HttpError(415, "Forms only.");
    }
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > maxBytes) {
        throw new HttpError(413, "That form is too large.");
      }
      chunks.push(chunk);
    }
    return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
  }

  // ---- pages ----

  function preSessionBinding(req) {
    return cookies(req).get(PRE_SESSION_COOKIE);
  }

  /** The two-factor challenge of the login in progress: `{ id, methods }`, or undefined. */
  function pendingTwoFactor(req) {
    const value = cookies(req).get(TWO_FACTOR_COOKIE);
    if (!value) {
      return undefined;
    }
    const colon = value.indexOf(":");
    if (colon < 0) {
      return { id: value, methods: ["totp", "recovery_code"] };
    }
    return { id: value.slice(0, colon), methods: value.slice(colon + 1).split("+").filter(Boolean) };
  }

  function twoFactorCookie(result) {
    const value = `${result.twoFactorId}:${result.methods.join("+")}`;
    return cookie(TWO_FACTOR_COOKIE, value, { path: "/login", maxAgeSeconds: secondsUntil(result.expiresAt) });
  }

  /** A passkey form: the page's script begins at `begin`, runs the ceremony (`mode` "create"
   * or "get") and posts the answer to `action`. `fields`: the form's own inputs. */
  function passkeyForm({ action, begin, mode, csrf, testId, button, fields = "" }) {
    return html`
      <form method="post" action="${action}" data-begin="${begin}" data-passkey="${mode}" data-testid="${testId}">
        ${csrfField(csrf)}
        ${fields}
        <input type="hidden" name="ceremony_id" value="">
        <input type="hidden" name="credential" value="">
        <p class="message error" role="alert" data-testid="passkey-error" data-passkey-error hidden></p>
        <button type="submit">${button}</button>
      </form>`;
  }

  /** The login page; sets the pre-session cookie its CSRF token is bound to when missing. */
  function loginPage(req, res, { status = 200, error, notice, identifier = "", setCookies = [] } = {}) {
    let binding = preSessionBinding(req);
    const set = [...setCookies];
    if (!binding) {
      binding = randomBytes(24).toString("base64url");
      set.push(cookie(PRE_SESSION_COOKIE, binding));
    }
    const body = html`
      ${message("ok", notice)}
      ${message("error", error)}
      <section>
        <form method="post" action="/login" data-testid="login-form">
          ${csrfField(csrfToken(binding))}
          <label for="identifier">Email, phone or handle</label>
          <input type="text" id="identifier" name="identifier" value="${identifier}" autocomplete="username" required>
          <label for="password">Password</label>
          <input type="password" id="password" name="password" autocomplete="current-password" required>
          <button type="submit">Sign in</button>
        </form>
        <p class="or muted">Or, without typing anything:</p>
        ${passkeyForm({
          action: "/login/passkey",
          begin: "/login/passkey/begin",
          mode: "get",
          csrf: csrfToken(binding),
          testId: "passkey-login-form",
          button: "Sign in with a passkey",
        })}
      </section>`;
    send(res, status, page("Sign in", body, PASSKEY_PAGE), { "set-cookie": set });
  }

  function twoFactorPage(req, res, { status = 200, error } = {}) {
    const binding = preSessionBinding(req);
    if (!binding) {
      return loginPage(req, res, { status: 403, error: "Your sign-in form expired. Please sign in again." });
    }
    const { methods } = pendingTwoFactor(req) ?? { methods: [] };
    const byCode = methods.includes("totp") || methods.includes("recovery_code");
    const byPasskey = methods.includes("passkey");
    const codeForm = html`
      <p>Enter the 6-digit code your authenticator app shows now, or one of your recovery codes.</p>
      <form method="post" action="/login/two-factor" data-testid="two-factor-form">
        ${csrfField(csrfToken(binding))}
        <label for="code">Code</label>
        <input type="text" id="code" name="code" autocomplete="one-time-code" inputmode="text" required>
        <button type="submit">Verify</button>
      </form>`;
    const passkey = html`
      <p class="or">${byCode ? "Or confirm with one of your passkeys:" : "Confirm with one of your passkeys."}</p>
      ${passkeyForm({
        action: "/login/two-factor/passkey",
        begin: "/login/two-factor/passkey/begin",
        mode: "get",
        csrf: csrfToken(binding),
        testId: "two-factor-passkey-form",
        button: "Use a passkey",
      })}`;
    const body = html`
      ${message("error", error)}
      <section>
        <p>Your account has two-factor authentication on: the password alone does not sign you in.</p>
        ${byCode ? codeForm : ""}
        ${byPasskey ? passkey : ""}
        <p><a href="/login">Start again</a></p>
      </section>`;
    send(res, status, page("Two-factor check", body, byPasskey ? PASSKEY_PAGE : {}));
  }

  const ACCOUNT_NOTICES = {
    "session-revoked": () => "That session is signed out.",
    "others-revoked": (n) => `Signed out everywhere else (${n} ${n === 1 ? "session" : "sessions"}).`,
    "totp-disabled": () => "Two-factor authentication is off. Sign-ins need the password alone again.",
    "passkey-removed": () => "The passkey is removed.",
  };

  /** The passkeys section: the list (name, added, last used, a remove button taking the
   * current password) and the registration form; or, from a st-peter without passkey
   * settings (`passkeys` undefined), why there is none. */
  function passkeysSection(who, passkeys, error) {
    if (passkeys === undefined) {
      return html`
        <section id="passkeys">
          <h2>Passkeys</h2>
          ${message("error", error)}
          <p class="muted" data-testid="passkey-state">Passkeys are not available on this sign-in service.</p>
        </section>`;
    }
    const n = passkeys.length;
    const state =
      n === 0
        ? "You have no passkeys."
        : `You have ${n} ${n === 1 ? "passkey" : "passkeys"}. Signing in with your password asks for a second step too.`;
    const rows = passkeys.map(
      (p) => html`
        <tr data-testid="passkey" data-passkey-id="${p.passkeyId}">
          <td data-testid="passkey-name">${p.name}</td>
          <td>${when(p.createdAt)}</td>
          <td data-testid="passkey-last-used">${when(p.lastUsedAt)}</td>
          <td>
            <form method="post" action="/account/passkeys/remove" class="inline" data-testid="passkey-remove-form">
              ${csrfField(who.csrf)}
              <input type="hidden" name="passkey_id" value="${p.passkeyId}">
              <input type="password" name="current_password" aria-label="Current password" placeholder="Current password" autocomplete="current-password" required>
              <button type="submit" data-testid="remove-passkey">Remove</button>
            </form>
          </td>
        </tr>`,
    );
    const fields = html`
      <label for="pk_password">Current password</label>
      <input type="password" id="pk_password" name="current_password" autocomplete="current-password" required>
      <label for="pk_name">Name of the passkey</label>
      <input type="text" id="pk_name" name="name" maxlength="${MAX_PASSKEY_NAME}" placeholder="work laptop" required>`;
    return html`
      <section id="passkeys">
        <h2>Passkeys</h2>
        ${message("error", error)}
        <p data-testid="passkey-state">${state}</p>
        ${
          n === 0
            ? ""
            : html`<table>
                <thead><tr><th>Name</th><th>Added</th><th>Last used</th><th></th></tr></thead>
                <tbody>${rows}</tbody>
              </table>`
        }
        <p class="muted">A passkey signs you in with this device's screen lock or a security key,
        without a password; after a password it stands in for a code.</p>
        ${passkeyForm({
          action: "/account/passkeys",
          begin: "/account/passkeys/begin",
          mode: "create",
          csrf: who.csrf,
          testId: "passkey-register-form",
          button: "Register a passkey",
          fields,
        })}
      </section>`;
  }

  /** The two-factor section without TOTP: the state and the setup button only. With a
   * passkey, a password sign-in asks for it: two-factor is not "off" then. */
  function totpOffForm(who, passkeys) {
    const state = passkeys
      ? "No authenticator app is set up. Sign-ins with your password ask for one of your passkeys as the second step."
      : "Two-factor authentication is off.";
    return html`
      <p data-testid="totp-state">${state}</p>
      <form method="post" action="/account/totp/begin" data-testid="totp-begin-form">
        ${csrfField(who.csrf)}
        <p>Protect sign-ins with a code from an authenticator app.</p>
        <button type="submit">Set up an authenticator app</button>
      </form>`;
  }

  /** The two-factor section with TOTP on: the state, new recovery codes, turning it off. */
  function totpOnForms(who, left) {
    const codes = `${left} recovery ${left === 1 ? "code" : "codes"} left`;
    return html`
      <p data-testid="totp-state">Two-factor authentication is on — ${codes}</p>
      ${left === 0 ? html`<p class="muted">Get new recovery codes, or a lost phone locks you out.</p>` : ""}
      <form method="post" action="/account/recovery-codes" data-testid="recovery-codes-form">
        ${csrfField(who.csrf)}
        <label for="rc_password">Current password</label>
        <input type="password" id="rc_password" name="current_password" autocomplete="current-password" required>
        <button type="submit">New recovery codes</button>
      </form>
      <form method="post" action="/account/totp/disable" data-testid="totp-disable-form">
        ${csrfField(who.csrf)}
        <label for="dis_password">Current password</label>
        <input type="password" id="dis_password" name="current_password" autocomplete="current-password" required>
        <button type="submit">Turn off two-factor</button>
      </form>`;
  }

  /** The account page: password, two-factor, sessions. `errors` by section. */
  async function accountPage(req, res, who, { status = 200, notice, errors = {} } = {}) {
    const account = stPeter.account(who.token);
    const [info, sessions, passkeys] = await Promise.all([
      account.get(),
      account.listSessions(),
      // A st-peter without WebAuthn settings answers FAILED_PRECONDITION, one older than
      // passkeys UNIMPLEMENTED: no passkeys then.
      account.listPasskeys().catch((error) => {
        if (error?.kind === "failed_precondition" || error?.code === GRPC_UNIMPLEMENTED) {
          return undefined;
        }
        throw error;
      }),
    ]);
    const { user, totpEnabled, recoveryCodesLeft } = info;
    const name = user.displayName || user.handle;
    const rows = sessions.map(
      (s) => html`
        <tr data-testid="session" data-session-id="${s.sessionId}" data-current="${s.current}">
          <td>${when(s.createdAt)}</td>
          <td>${when(s.expiresAt)}</td>
          <td>${when(s.lastSeenAt)}</td>
          <td>${s.current ? html`<strong data-testid="this-device">this device</strong>` : ""}</td>
          <td>${
            s.current
              ? html`<form method="post" action="/logout" class="inline">${csrfField(who.csrf)}<button type="submit">Sign out</button></form>`
              : html`<form method="post" action="/account/sessions/revoke" class="inline">
                  ${csrfField(who.csrf)}
                  <input type="hidden" name="session_id" value="${s.sessionId}">
                  <button type="submit" data-testid="revoke-session">Revoke</button>
                </form>`
          }</td>
        </tr>`,
    );
    const body = html`
      <p>Signed in as <strong data-testid="who">${name}</strong> (${user.handle}).</p>
      <form method="post" action="/logout" data-testid="logout-form">
        ${csrfField(who.csrf)}
        <button type="submit">Sign out</button>
      </form>
      ${message("ok", notice)}
      <section id="password">
        <h2>Password</h2>
        ${message("error", errors.password)}
        <form method="post" action="/account/password" data-testid="password-form">
          ${csrfField(who.csrf)}
          <label for="current_password">Current password</label>
          <input type="password" id="current_password" name="current_password" autocomplete="current-password" required>
          <label for="new_password">New password</label>
          <input type="password" id="new_password" name="new_password" autocomplete="new-password" required>
          <div>
            <input type="checkbox" id="revoke_others_pw" name="revoke_other_sessions" value="yes">
            <label for="revoke_others_pw" class="inline">Sign out other devices</label>
          </div>
          <button type="submit">Change password</button>
        </form>
      </section>
      <section id="two-factor">
        <h2>Two-factor authentication</h2>
        ${message("error", errors.totp)}
        ${totpEnabled ? totpOnForms(who, recoveryCodesLeft) : totpOffForm(who, passkeys?.length ?? 0)}
      </section>
      ${passkeysSection(who, passkeys, errors.passkeys)}
      <section id="sessions">
        <h2>Where you are signed in</h2>
        ${message("error", errors.sessions)}
        <table>
          <thead><tr><th>Signed in</th><th>Expires</th><th>Last seen</th><th></th><th></th></tr></thead>
          <tbody>${rows}</tbody>
        </table>
        <form method="post" action="/account/sessions/revoke-others" data-testid="revoke-others-form">
          ${csrfField(who.csrf)}
          <button type="submit">Sign out everywhere else</button>
        </form>
      </section>`;
    send(res, status, page("Your account", body, passkeys === undefined ? {} : PASSKEY_PAGE));
  }

  async function enrollmentPage(res, who, entry, { status = 200, error } = {}) {
    const { enrollment } = entry;
    const uri = new URL(enrollment.otpauthUri);
    const secret = uri.searchParams.get("secret") ?? "";
    const svg = await enrollment.qrCodeSvg();
    const png = Buffer.from(await enrollment.qrCodePng()).toString("base64");
    const body = html`
      ${message("error", error)}
      <section>
        <p>Scan this QR code with your authenticator app, then enter the code it shows to
        turn two-factor authentication on.</p>
        <div class="qr" data-testid="qr">${raw(svg)}</div>
        <p><a href="data:image/png;base64,${png}" download="st-peter-totp.png">Download the QR code (PNG)</a></p>
        <p>Can't scan? Enter this key by hand:
          <code class="secret" data-testid="totp-secret">${secret}</code></p>
        <p class="muted">This setup expires at ${when(enrollment.expiresAt)}.</p>
        <form method="post" action="/account/totp/confirm" data-testid="totp-confirm-form">
          ${csrfField(who.csrf)}
          <input type="hidden" name="enrollment_id" value="${enrollment.enrollmentId}">
          <label for="code">Code from the app</label>
          <input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required>
          <div>
            <input type="checkbox" id="revoke_others_totp" name="revoke_other_sessions" value="yes">
            <label for="revoke_others_totp" class="inline">Sign out other devices</label>
          </div>
          <button type="submit">Turn on</button>
        </form>
        <p><a href="/account">Cancel</a></p>
      </section>`;
    send(res, status, page("Set up an authenticator app", body));
  }

  function recoveryCodesPage(res, codes, lead) {
    const body = html`
      ${message("ok", lead)}
      <section>
        <h2>Your recovery codes</h2>
        <p>Each code signs you in once in place of an authenticator code. Save them
        somewhere safe now: <strong>they are shown only this once</strong>.</p>
        <ol class="codes" data-testid="recovery-codes">${codes.map((c) => html`<li><code>${c}</code></li>`)}</ol>
        <p><a href="/account">Back to your account</a></p>
      </section>`;
    send(res, 200, page("Recovery codes", body));
  }

  // ---- st-peter's refusals, as people read them ----

  /** [status, text] for an account call's error; undefined when it is not a refusal to show. */
  function refusal(error, context) {
    const detail = String(error?.detail ?? "");
    switch (error?.kind) {
      case "invalid_argument":
        if (context === "password") {
          // `new_password: is too easy to guess (...)` -> "The new password is too easy ..."
          const reason = detail.replace(/^new_password:\s*/, "").trim();
          return [400, /^is\b/.test(reason) ? `The new password ${reason}` : `The new password was refused: ${readable(detail)}`];
        }
        if (context === "passkey-finish" && /^credential_json\b/.test(detail)) {
          return [400, `Your passkey was not accepted: ${readable(detail)}`];
        }
        if (context === "passkey-finish" && /^name\b/.test(detail)) {
          return [400, `The passkey's name ${detail.replace(/^name:\s*/, "")}`];
        }
        if (/\bcode\b/.test(detail)) {
          return [400, "That code is not right. Check the app and enter the code it shows now."];
        }
        return [400, readable(detail)];
      case "permission_denied":
        return [403, "Your current password is not right."];
      case "rate_limited":
        return [429, "Too many wrong attempts. Wait a little, then try again."];
      case "failed_precondition":
        if (/webauthn/i.test(detail)) {
          return [409, "Passkeys are not available on this sign-in service."];
        }
        if (context === "passkey-finish") {
          return [409, "That registration took too long or was already used. Please try again."];
        }
        if (context === "begin") {
          return [409, "Two-factor authentication is already on. Turn it off first to set up another app."];
        }
        if (context === "confirm") {
          return [409, "This setup has expired or was already used. Start again."];
        }
        if (context === "totp-off") {
          return [409, "Two-factor authentication is not on."];
        }
        return [409, readable(detail)];
      case "not_found":
        if (context === "passkey-remove") {
          return [404, "That passkey is already removed."];
        }
        return [404, "That session is already signed out."];
      default:
        return undefined;
    }
  }

  /** st-peter's `field: reason` message as a sentence. */
  function readable(detail) {
    const text = detail.replace(/^[a-z_]+:\s*/, "").trim();
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : "It was refused.";
  }

  const LOGIN_FAILURES = {
    invalid_credentials: "Wrong identifier or password.",
    invalid_code: "That code is not right.",
    challenge_expired: "That sign-in took too long. Please sign in again.",
    unknown: "Signing in failed. Please try again.",
  };

  const PASSKEY_LOGIN_FAILURES = {
    invalid_credentials: "That passkey was not accepted. It may have been removed from your account.",
    challenge_expired: "That sign-in took too long. Please try again.",
    malformed: "The browser's answer could not be read. Please try again.",
  };

  /** finishPasskeyLogin, with a credential st-peter cannot read (INVALID_ARGUMENT) as one
   * more failure reason, `malformed`. */
  async function finishPasskeyLogin(posted) {
    try {
      return await stPeter.finishPasskeyLogin(posted.id, posted.credential);
    } catch (error) {
      if (error?.kind === "invalid_argument") {
        return { kind: "failed", reason: "malformed" };
      }
      throw error;
    }
  }

  /** The name typed for a new passkey, or the reason it will not do. */
  function passkeyName(form) {
    const name = (form.get("name") ?? "").trim();
    if (!name) {
      return { error: "Give the passkey a name, to tell it apart from others later." };
    }
    if ([...name].length > MAX_PASSKEY_NAME) {
      return { error: `The passkey's name is too long (at most ${MAX_PASSKEY_NAME} characters).` };
    }
    return { name };
  }

  /** st-peter has no WebAuthn settings (FAILED_PRECONDITION naming them), or is older than
   * passkeys (UNIMPLEMENTED). */
  function passkeysUnavailable(error) {
    return (
      (error?.kind === "failed_precondition" && /webauthn/i.test(String(error.detail ?? ""))) ||
      error?.code === GRPC_UNIMPLEMENTED
    );
  }

  /** What a `begin` route answers the page's script for an error st-peter answered. */
  function beginFailure(res, error, context) {
    if (error?.kind === "unavailable") {
      return sendJson(res, 503, { error: "The sign-in service is unavailable right now. Please try again shortly." });
    }
    if (error?.kind === "rate_limited") {
      return sendJson(res, 429, { error: "Too many attempts. Wait a little, then try again." });
    }
    if (passkeysUnavailable(error)) {
      return sendJson(res, 409, { error: "Passkeys are not available on this sign-in service." });
    }
    if (context === "two-factor" && ["failed_precondition", "invalid_argument", "not_found"].includes(error?.kind)) {
      return sendJson(res, 409, { error: "This sign-in expired or had too many attempts. Please sign in again." });
    }
    const shown = refusal(error, context);
    if (!shown) throw error;
    return sendJson(res, shown[0], { error: shown[1] });
  }

  /** st-peter's options JSON, as the page's script takes it. */
  function ceremony(id, optionsJson) {
    return { id, options: JSON.parse(optionsJson) };
  }

  /** The browser's answer posted with a finishing form (empty without the page's script). */
  function postedCredential(form) {
    const id = form.get("ceremony_id") ?? "";
    const credential = form.get("credential") ?? "";
    return id && credential ? { id, credential: passkeyCredentialJson(credential) } : undefined;
  }

  function loginFailure(result) {
    if (result.reason === "rate_limited") {
      const seconds = Math.max(1, Math.ceil((result.retryAfterMs ?? 1000) / 1000));
      return `Too many attempts. Try again in ${seconds} ${seconds === 1 ? "second" : "seconds"}.`;
    }
    return LOGIN_FAILURES[result.reason] ?? LOGIN_FAILURES.unknown;
  }

  /** A finished login: the session cookie (until the token expires), then the account page. */
  function signIn(res, result) {
    redirect(res, "/account", [
      cookie(SESSION_COOKIE, result.token, { maxAgeSeconds: secondsUntil(result.expiresAt) }),
      clearCookie(TWO_FACTOR_COOKIE, "/login"),
      clearCookie(PRE_SESSION_COOKIE),
    ]);
  }

  function prune() {
    const now = Date.now();
    for (const [id, entry] of pending) {
      if (entry.expiresAt <= now) {
        pending.delete(id);
      }
    }
    while (pending.size >= MAX_PENDING_ENROLLMENTS) {
      pending.delete(pending.keys().next().value);
    }
  }

  // ---- routes ----

  /** POST handlers of signed-in users: (req, res, who, form). */
  const accountActions = {
    async "/account/password"(req, res, who, form) {
      const current = form.get("current_password") ?? "";
      const next = form.get("new_password") ?? "";
      const revokeOtherSessions = form.get("revoke_other_sessions") === "yes";
      try {
        const revoked = await stPeter.account(who.token).changePassword(current, next, { revokeOtherSessions });
        const notice = revokeOtherSessions
          ? `Password changed. Signed out ${revoked} other ${revoked === 1 ? "session" : "sessions"}.`
          : "Password changed.";
        return accountPage(req, res, who, { notice });
      } catch (error) {
        const shown = refusal(error, "password");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { password: shown[1] } });
      }
    },

    async "/account/totp/begin"(req, res, who) {
      let enrollment;
      try {
        enrollment = await stPeter.account(who.token).beginTotpEnrollment();
      } catch (error) {
        const shown = refusal(error, "begin");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { totp: shown[1] } });
      }
      prune();
      const entry = { enrollment, userId: who.user.userId, expiresAt: enrollment.expiresAt.getTime() };
      pending.set(enrollment.enrollmentId, entry);
      return enrollmentPage(res, who, entry);
    },

    async "/account/totp/confirm"(req, res, who, form) {
      const enrollmentId = form.get("enrollment_id") ?? "";
      const code = (form.get("code") ?? "").replace(/\s+/g, "");
      const revokeOtherSessions = form.get("revoke_other_sessions") === "yes";
      try {
        const confirmed = await stPeter
          .account(who.token)
          .confirmTotpEnrollment(enrollmentId, code, { revokeOtherSessions });
        pending.delete(enrollmentId);
        let lead = "Two-factor authentication is on.";
        if (revokeOtherSessions) {
          const n = confirmed.revokedSessions;
          lead += ` Signed out ${n} other ${n === 1 ? "session" : "sessions"}.`;
        }
        return recoveryCodesPage(res, confirmed.recoveryCodes, lead);
      } catch (error) {
        const shown = refusal(error, "confirm");
        if (!shown) throw error;
        const entry = pending.get(enrollmentId);
        if (error.kind === "invalid_argument" && entry && entry.userId === who.user.userId) {
          return enrollmentPage(res, who, entry, { status: shown[0], error: shown[1] });
        }
        pending.delete(enrollmentId);
        return accountPage(req, res, who, { status: shown[0], errors: { totp: shown[1] } });
      }
    },

    async "/account/totp/disable"(req, res, who, form) {
      try {
        await stPeter.account(who.token).disableTotp(form.get("current_password") ?? "");
      } catch (error) {
        const shown = refusal(error, "totp-off");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { totp: shown[1] } });
      }
      return redirect(res, "/account?done=totp-disabled");
    },

    async "/account/recovery-codes"(req, res, who, form) {
      try {
        const codes = await stPeter.account(who.token).regenerateRecoveryCodes(form.get("current_password") ?? "");
        return recoveryCodesPage(res, codes, "New recovery codes: the old ones no longer work.");
      } catch (error) {
        const shown = refusal(error, "totp-off");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { totp: shown[1] } });
      }
    },

    async "/account/passkeys"(req, res, who, form) {
      const posted = postedCredential(form);
      const named = passkeyName(form);
      if (!posted || named.error) {
        const error = named.error ?? "Registering a passkey needs JavaScript in this browser.";
        return accountPage(req, res, who, { status: 400, errors: { passkeys: error } });
      }
      let passkey;
      try {
        passkey = await stPeter.account(who.token).finishPasskeyRegistration(posted.id, posted.credential, named.name);
      } catch (error) {
        const shown = refusal(error, "passkey-finish");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { passkeys: shown[1] } });
      }
      return accountPage(req, res, who, { notice: `Passkey “${passkey.name}” registered.` });
    },

    async "/account/passkeys/remove"(req, res, who, form) {
      try {
        await stPeter.account(who.token).removePasskey(form.get("passkey_id") ?? "", form.get("current_password") ?? "");
      } catch (error) {
        const shown = refusal(error, "passkey-remove");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { passkeys: shown[1] } });
      }
      return redirect(res, "/account?done=passkey-removed");
    },

    async "/account/sessions/revoke"(req, res, who, form) {
      const sessionId = form.get("session_id") ?? "";
      try {
        await stPeter.account(who.token).revokeSession(sessionId);
      } catch (error) {
        const shown = refusal(error, "sessions");
        if (!shown) throw error;
        return accountPage(req, res, who, { status: shown[0], errors: { sessions: shown[1] } });
      }
      // Revoking one's own session is a logout; the next page load finds out.
      return redirect(res, "/account?done=session-revoked");
    },

    async "/account/sessions/revoke-others"(req, res, who) {
      const revoked = await stPeter.account(who.token).revokeOtherSessions();
      return redirect(res, `/account?done=others-revoked&n=${revoked}`);
    },

    async "/logout"(req, res, who) {
      await stPeter.logout(who.token);
      return redirect(res, "/login?done=logged-out", [clearCookie(SESSION_COOKIE)]);
    },
  };

  const LOGIN_NOTICES = {
    "logged-out": "You are signed out.",
    "signed-out": "Your session ended. Please sign in again.",
  };

  /** The page's script starts a registration: the current password is checked here (by
   * st-peter), and the name before the browser is asked to make anything. */
  async function beginRegistration(req, res, form) {
    const who = await signedIn(req);
    if (!who) {
      return sendJson(res, 401, { error: "Your session ended. Please sign in again." });
    }
    if (!csrfValid(who.token, form.get("csrf"))) {
      return sendJson(res, 403, { error: "That form is out of date. Reload the page and try again." });
    }
    const named = passkeyName(form);
    if (named.error) {
      return sendJson(res, 400, { error: named.error });
    }
    try {
      const started = await stPeter.account(who.token).beginPasskeyRegistration(form.get("current_password") ?? "");
      return sendJson(res, 200, ceremony(started.registrationId, started.optionsJson));
    } catch (error) {
      if (error?.kind === "invalid_token") {
        return sendJson(res, 401, { error: "Your session ended. Please sign in again." });
      }
      return beginFailure(res, error, "passkey-begin");
    }
  }

  async function route(req, res, url) {
    const path = url.pathname;
    if (req.method === "GET" || req.method === "HEAD") {
      switch (path) {
        case "/style.css":
          res.writeHead(200, { ...SECURITY_HEADERS, "content-type": "text/css; charset=utf-8", "cache-control": "max-age=300" });
          return res.end(STYLE);
        case "/passkeys.js":
          res.writeHead(200, {
            ...SECURITY_HEADERS,
            "content-type": "text/javascript; charset=utf-8",
            "cache-control": "max-age=300",
          });
          return res.end(PASSKEY_SCRIPT);
        case "/":
          return redirect(res, sessionToken(req) ? "/account" : "/login");
        case "/login": {
          if (sessionToken(req) && (await signedIn(req))) {
            return redirect(res, "/account");
          }
          const notice = LOGIN_NOTICES[url.searchParams.get("done")];
          return loginPage(req, res, { notice });
        }
        case "/login/two-factor":
          if (!pendingTwoFactor(req)) {
            return redirect(res, "/login");
          }
          return twoFactorPage(req, res);
        case "/account": {
          const who = await signedIn(req);
          if (!who) {
            return toLogin(req, res, sessionToken(req) ? "signed-out" : undefined);
          }
          const done = ACCOUNT_NOTICES[url.searchParams.get("done")];
          const n = Number.parseInt(url.searchParams.get("n") ?? "0", 10) || 0;
          return accountPage(req, res, who, { notice: done?.(n) });
        }
        default:
          throw new HttpError(404, "There is no such page.");
      }
    }
    if (req.method !== "POST") {
      throw new HttpError(405, "That method is not allowed here.");
    }
    if (!sameOrigin(req)) {
      throw new HttpError(403, "That form came from another site, so it was refused.");
    }
    const form = await readForm(req, PASSKEY_FINISH_PATHS.has(path) ? MAX_PASSKEY_BODY_BYTES : MAX_BODY_BYTES);

    if (path === "/login") {
      if (!csrfValid(preSessionBinding(req), form.get("csrf"))) {
        return loginPage(req, res, { status: 403, error: "Your sign-in form expired. Please try again." });
      }
      const identifier = form.get("identifier") ?? "";
      const result = await stPeter.login(identifier, form.get("password") ?? "");
      if (result.kind === "authenticated") {
        return signIn(res, result);
      }
      if (result.kind === "two_factor") {
        return redirect(res, "/login/two-factor", [twoFactorCookie(result)]);
      }
      return loginPage(req, res, { status: 401, error: loginFailure(result), identifier });
    }

    // A discoverable passkey sign-in: no identifier, the passkey says who it is.
    if (path === "/login/passkey/begin") {
      if (!csrfValid(preSessionBinding(req), form.get("csrf"))) {
        return sendJson(res, 403, { error: "Your sign-in form expired. Reload the page and try again." });
      }
      try {
        const started = await stPeter.beginPasskeyLogin();
        return sendJson(res, 200, ceremony(started.challengeId, started.optionsJson));
      } catch (error) {
        return beginFailure(res, error, "login");
      }
    }

    if (path === "/login/passkey") {
      const posted = postedCredential(form);
      if (!csrfValid(preSessionBinding(req), form.get("csrf")) || !posted) {
        return loginPage(req, res, { status: 403, error: "Your sign-in form expired. Please try again." });
      }
      const result = await finishPasskeyLogin(posted);
      if (result.kind === "authenticated") {
        return signIn(res, result);
      }
      const error = PASSKEY_LOGIN_FAILURES[result.reason] ?? loginFailure(result);
      return loginPage(req, res, { status: 401, error });
    }

    // A passkey as the second step of a password login.
    if (path === "/login/two-factor/passkey/begin") {
      const pending = pendingTwoFactor(req);
      if (!csrfValid(preSessionBinding(req), form.get("csrf")) || !pending) {
        return sendJson(res, 403, { error: "Your sign-in form expired. Please start again." });
      }
      try {
        const started = await stPeter.beginPasskeyLogin({ twoFactorId: pending.id });
        return sendJson(res, 200, ceremony(started.challengeId, started.optionsJson));
      } catch (error) {
        return beginFailure(res, error, "two-factor");
      }
    }

    if (path === "/login/two-factor/passkey") {
      const posted = postedCredential(form);
      if (!csrfValid(preSessionBinding(req), form.get("csrf")) || !pendingTwoFactor(req) || !posted) {
        return loginPage(req, res, { status: 403, error: "Your sign-in form expired. Please sign in again." });
      }
      const result = await finishPasskeyLogin(posted);
      if (result.kind === "authenticated") {
        return signIn(res, result);
      }
      if (result.kind === "failed" && result.reason !== "rate_limited") {
        const error = PASSKEY_LOGIN_FAILURES[result.reason] ?? loginFailure(result);
        return twoFactorPage(req, res, { status: 401, error });
      }
      return loginPage(req, res, {
        status: 401,
        error: loginFailure(result),
        setCookies: [clearCookie(TWO_FACTOR_COOKIE, "/login")],
      });
    }

    if (path === "/login/two-factor") {
      const twoFactorId = pendingTwoFactor(req)?.id;
      if (!csrfValid(preSessionBinding(req), form.get("csrf")) || !twoFactorId) {
        return loginPage(req, res, { status: 403, error: "Your sign-in form expired. Please sign in again." });
      }
      const code = (form.get("code") ?? "").trim();
      const result = await stPeter.verifyTwoFactor(twoFactorId, code);
      if (result.kind === "authenticated") {
        return signIn(res, result);
      }
      if (result.kind === "failed" && result.reason === "invalid_code") {
        return twoFactorPage(req, res, { status: 401, error: "That code is not right. Try the code your app shows now." });
      }
      return loginPage(req, res, {
        status: 401,
        error: loginFailure(result),
        setCookies: [clearCookie(TWO_FACTOR_COOKIE, "/login")],
      });
    }

    if (path === "/account/passkeys/begin") {
      return beginRegistration(req, res, form);
    }

    const action = Object.hasOwn(accountActions, path) ? accountActions[path] : undefined;
    if (!action) {
      throw new HttpError(404, "There is no such page.");
    }
    const who = await signedIn(req);
    if (!who) {
      return toLogin(req, res, sessionToken(req) ? "signed-out" : undefined);
    }
    if (!csrfValid(who.token, form.get("csrf"))) {
      throw new HttpError(403, "That form is out of date. Reload the page and try again.");
    }
    try {
      return await action(req, res, who, form);
    } catch (error) {
      // The session ended between the check and the call (revoked elsewhere).
      if (error?.kind === "invalid_token") {
        return toLogin(req, res, "signed-out");
      }
      throw error;
    }
  }

  return async function handle(req, res) {
    const started = Date.now();
    const url = new URL(req.url ?? "/", "http://app.invalid");
    try {
      await route(req, res, url);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
      } else if (error instanceof HttpError) {
        send(res, error.status, page("Sorry", html`${message("error", error.message)}<p><a href="/account">Back</a></p>`));
      } else if (error?.kind === "unavailable") {
        send(res, 503, page("Sorry", message("error", "The sign-in service is unavailable right now. Please try again shortly.")));
      } else if (error?.kind === "invalid_token") {
        toLogin(req, res, "signed-out");
      } else {
        // Our own fault or an unexpected answer: the kind and code only (the messages carry
        // no secrets, but a stack or a request could).
        log(`error on ${req.method} ${url.pathname}: ${error?.name ?? "Error"} ${error?.kind ?? ""} ${error?.code ?? ""}`);
        send(res, 500, page("Sorry", message("error", "Something went wrong on our side.")));
      }
    } finally {
      // The path only: the query is never logged, and no token is ever in either.
      log(`${req.method} ${url.pathname} ${res.statusCode} ${Date.now() - started}ms`);
    }
  };
}

export { esc };
