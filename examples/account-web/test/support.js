// What the browser test stands on: the real st-peter binary on a port it picks (learned
// from its --ready-file) with a fresh SQLite file, users made with its admin CLI, the
// example app as its own process (`node src/server.js`, as `npm start` runs it), Debian's
// Chromium, and RFC 6238 codes computed here with node:crypto.
import { spawn, spawnSync } from "node:child_process";
import net from "node:net";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const appDir = fileURLToPath(new URL("../", import.meta.url));
export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
export const screenshotDir = join(repoRoot, "target", "account-web-screenshots");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** $ST_PETER_BIN, else target/debug/st-peter of the repository (scripts/test.sh builds it). */
export function serverBinary() {
  const bin = process.env.ST_PETER_BIN || join(repoRoot, "target", "debug", "st-peter");
  if (!existsSync(bin)) {
    throw new Error(`no st-peter binary at ${bin}: run cargo build -p st-peter-server --bin st-peter, or set ST_PETER_BIN`);
  }
  return bin;
}

async function until(what, check, timeoutMs, failed = () => undefined) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) {
      return value;
    }
    const why = failed();
    if (why) {
      throw new Error(`${what}: ${why}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  return exited.finally(() => clearTimeout(timer));
}

/** A TCP port free on 127.0.0.1 just now (for a process that must know its port before it
 * starts: st-peter's WebAuthn origin names the app's). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** `st-peter serve --listen 127.0.0.1:0` on a fresh SQLite file; `args`: more flags (the
 * passkey test's `--webauthn-rp-id` and `--webauthn-origin`). */
export class StPeter {
  static async start(args = []) {
    const bin = serverBinary();
    const dir = mkdtempSync(join(tmpdir(), "st-peter-account-web-"));
    const databaseUrl = `sqlite://${join(dir, "st-peter.db")}`;
    const readyFile = join(dir, "ready");
    const serve = ["serve", "--listen", "127.0.0.1:0", "--database-url", databaseUrl, "--ready-file", readyFile, ...args];
    const child = spawn(bin, serve, {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const address = await until(
      "st-peter's ready file",
      () => {
        try {
          return readFileSync(readyFile, "utf8").trim();
        } catch {
          return "";
        }
      },
      30_000,
      () => (child.exitCode !== null ? `st-peter exited (${child.exitCode}): ${stderr}` : undefined),
    );
    return new StPeter(bin, dir, databaseUrl, child, address);
  }

  constructor(bin, dir, databaseUrl, child, address) {
    Object.assign(this, { bin, dir, databaseUrl, child, address });
  }

  get target() {
    return `http://${this.address}`;
  }

  /** Runs an admin command on this server's database; answers its JSON. */
  admin(args, stdin = "") {
    const run = spawnSync(this.bin, [...args, "--database-url", this.databaseUrl, "--json"], { input: stdin, encoding: "utf8" });
    if (run.status !== 0) {
      throw new Error(`st-peter ${args.join(" ")}: exit ${run.status}: ${run.stderr}`);
    }
    return JSON.parse(run.stdout);
  }

  addUser({ handle, email, displayName, password }) {
    const args = ["user", "add", "--handle", handle, "--password-stdin"];
    if (email) args.push("--email", email);
    if (displayName) args.push("--display-name", displayName);
    return this.admin(args, `${password}\n`).user_id;
  }

  async close() {
    await stopChild(this.child);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The example app as `npm start` runs it, on a free port (or on `port`); its output is kept
 * (`log`). `url` is where it says it listens, `http://127.0.0.1:PORT`, unless `host` names
 * another (the passkey test opens it as `http://localhost:PORT`, the WebAuthn origin). */
export class App {
  static async start(stPeterTarget, { port = 0, host } = {}) {
    const child = spawn(process.execPath, ["src/server.js"], {
      cwd: appDir,
      env: { ...process.env, ST_PETER_TARGET: stPeterTarget, LISTEN: `127.0.0.1:${port}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const app = new App(child);
    child.stdout.on("data", (chunk) => (app.log += chunk));
    child.stderr.on("data", (chunk) => (app.log += chunk));
    app.url = await until(
      "the app's listening line",
      () => /listening on (http:\/\/\S+)/.exec(app.log)?.[1],
      15_000,
      () => (child.exitCode !== null ? `the app exited (${child.exitCode}): ${app.log}` : undefined),
    );
    if (host) {
      const url = new URL(app.url);
      url.hostname = host;
      app.url = url.origin;
    }
    return app;
  }

  constructor(child) {
    this.child = child;
    this.log = "";
  }

  async close() {
    await stopChild(this.child);
  }
}

/** Empties a screenshot folder (no stale pictures from an earlier run): the walk's, or its
 * `sub` folder (the passkey test's `passkeys/`). */
export function resetScreenshotDir(sub = "") {
  const dir = join(screenshotDir, sub);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
}

export function ensureScreenshotDir(sub = "") {
  const dir = join(screenshotDir, sub);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const bytes = [];
  for (const char of text.toUpperCase().replace(/[\s=]+/g, "")) {
    const index = alphabet.indexOf(char);
    if (index < 0) {
      throw new Error(`not base32: ${JSON.stringify(char)}`);
    }
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

/** The 30-second step of a time (ms since the epoch). */
export function totpStep(atMs = Date.now()) {
  return Math.floor(atMs / 1000 / 30);
}

/** RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps) for a base32 secret at a step. */
export function totpCode(secret, step = totpStep()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const sum = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = sum[sum.length - 1] & 0x0f;
  return String((sum.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

/** A 6-digit code st-peter accepts at no step near now (it allows one step either side). */
export function wrongTotpCode(secret) {
  const now = totpStep();
  const accepted = new Set([now - 1, now, now + 1, now + 2].map((step) => totpCode(secret, step)));
  for (let n = 123456; ; n++) {
    const code = String(n % 1_000_000).padStart(6, "0");
    if (!accepted.has(code)) {
      return code;
    }
  }
}
