// The test harness: a real st-peter server (the `st-peter` binary) on a port it picks
// itself, learned from its --ready-file, with a temp SQLite file, and users made (sessions
// revoked, roles granted) with its admin CLI on the same database.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import type { Interceptor } from "@connectrpc/connect";

import type { RevocationEvent } from "../src/genpb/st_peter/auth/v1/auth_pb.js";
import { connect, type Client, type ClientOptions } from "../src/index.js";

// build-test/test/harness.js -> the repository root.
const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

let binary: string | undefined;

/** $ST_PETER_BIN, else target/debug/st-peter of the repository, built with cargo when missing. */
export function serverBinary(): string {
  if (binary) {
    return binary;
  }
  const fromEnv = process.env.ST_PETER_BIN;
  if (fromEnv) {
    return (binary = fromEnv);
  }
  const built = join(repoRoot, "target", "debug", "st-peter");
  if (!existsSync(built)) {
    const cargo = spawnSync("cargo", ["build", "-p", "st-peter-server", "--bin", "st-peter"], {
      cwd: repoRoot,
      stdio: ["ignore", "inherit", "inherit"],
    });
    if (cargo.status !== 0) {
      throw new Error(`building the server failed (${cargo.status ?? cargo.error})`);
    }
  }
  return (binary = built);
}

/** A loopback address with a port nothing listens on (bound, then released). */
export async function freeAddress(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/** The address in a ready file once the server has written it whole, else undefined. */
function readyAddress(path: string): string | undefined {
  try {
    const text = readFileSync(path, "utf8").trim();
    return text === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

export interface NewUser {
  handle: string;
  email?: string | null;
  phone?: string | null;
  displayName?: string | null;
  password: string;
}

export class TestServer {
  private child: ChildProcess | undefined;
  private stderr = "";
  private readonly clients: Client[] = [];

  private constructor(
    readonly bin: string,
    readonly dir: string,
    public databaseUrl: string,
    private readonly extraArgs: string[],
  ) {}

  private databases = 1;

  /** Empty until the first start has bound a port; the same port on every resume(). */
  private boundAddress = "";

  get address(): string {
    return this.boundAddress;
  }

  /** Runs `st-peter serve` on a port it picks (127.0.0.1:0) with a fresh database. */
  static async start(extraArgs: string[] = []): Promise<TestServer> {
    const dir = mkdtempSync(join(tmpdir(), "st-peter-ts-"));
    const server = new TestServer(
      serverBinary(),
      dir,
      `sqlite://${join(dir, "st-peter.db")}`,
      extraArgs,
    );
    await server.resume();
    return server;
  }

  get target(): string {
    return `http://${this.address}`;
  }

  /** Serves again (same database, same port) after stop(); waits for the ready file the
   * server writes once its listener is bound. */
  async resume(): Promise<void> {
    const readyFile = join(this.dir, "ready");
    rmSync(readyFile, { force: true });
    const listen = this.boundAddress || "127.0.0.1:0";
    const args = [
      "serve",
      "--listen",
      listen,
      "--database-url",
      this.databaseUrl,
      "--ready-file",
      readyFile,
      ...this.extraArgs,
    ];
    const child = spawn(this.bin, args, { stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    this.stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
    let exited = false;
    child.once("exit", () => (exited = true));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const address = readyAddress(readyFile);
      if (address) {
        this.boundAddress = address;
        return;
      }
      if (exited) {
        throw new Error(`st-peter exited at start: ${this.stderr}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`st-peter wrote no ready file within 30 s: ${this.stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Stops serving (SIGTERM, then SIGKILL after 10 s; or at once with `signal` SIGKILL,
   * which resets its connections); the database stays for resume(). */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** Serves the next resume() (and admin commands) from a new, empty SQLite file, whose
   * revocation log knows nothing of the old one's sequences. */
  useNewDatabase(): void {
    this.databases++;
    this.databaseUrl = `sqlite://${join(this.dir, `st-peter-${this.databases}.db`)}`;
  }

  /** SIGSTOP: the process hangs with its connections open, answering nothing. */
  freeze(): void {
    this.child?.kill("SIGSTOP");
  }

  /** SIGCONT after freeze(). */
  thaw(): void {
    this.child?.kill("SIGCONT");
  }

  /** Closes the clients made by client() so far (a test that counts the server's work
   * closes those of earlier tests first). */
  closeClients(): void {
    for (const client of this.clients.splice(0)) {
      client.close();
    }
  }

  /** Stops the server, closes the clients made by client(), removes the database. */
  async close(): Promise<void> {
    this.closeClients();
    this.thaw();
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A client of this server whose RPCs are counted by method name. */
  client(options: ClientOptions = {}): { client: Client; counts: RpcCounts } {
    const counts = new RpcCounts();
    const client = connect(this.target, {
      ...options,
      interceptors: [...(options.interceptors ?? []), counts.interceptor],
    });
    this.clients.push(client);
    return { client, counts };
  }

  /** Runs an admin command of the binary on this server's database; answers its JSON. */
  admin(args: string[], stdin = ""): unknown {
    const run = spawnSync(this.bin, [...args, "--database-url", this.databaseUrl, "--json"], {
      input: stdin,
      encoding: "utf8",
    });
    if (run.status !== 0) {
      throw new Error(`st-peter ${args.join(" ")}: ${run.status}: ${run.stderr}`);
    }
    return run.stdout.trim() === "" ? undefined : JSON.parse(run.stdout);
  }

  /** Creates a user; answers their user_id. */
  addUser(user: NewUser): string {
    const args = ["user", "add", "--handle", user.handle, "--password-stdin"];
    if (user.email) args.push("--email", user.email);
    if (user.phone) args.push("--phone", user.phone);
    if (user.displayName) args.push("--display-name", user.displayName);
    const created = this.admin(args, `${user.password}\n`) as { user_id?: string };
    if (!created.user_id) {
      throw new Error("user add answered no user_id");
    }
    return created.user_id;
  }

  /** Revokes one session with the admin CLI (another process writing the database). */
  revokeSession(token: string): void {
    this.admin(["session", "revoke", "--token-stdin"], `${token}\n`);
  }

  grantRole(identifier: string, role: string): void {
    this.admin(["user", "role", "grant", identifier, role]);
  }

  disable(identifier: string): void {
    this.admin(["user", "disable", identifier]);
  }

  /** Creates a service account (`st-peter service add`); answers its user_id. */
  addService(name: string): string {
    const created = this.admin(["service", "add", name]) as { user_id?: string; kind?: string };
    if (!created.user_id || created.kind !== "service") {
      throw new Error(`service add answered ${JSON.stringify(created)}`);
    }
    return created.user_id;
  }

  /** Creates an API key for a service account (printed once); answers it with its id. */
  createApiKey(service: string): { keyId: string; apiKey: string } {
    const created = this.admin(["service", "key", "create", service]) as { key_id?: string; api_key?: string };
    if (!created.key_id || !created.api_key?.startsWith("stk_")) {
      throw new Error(`service key create answered no key_id or api_key`);
    }
    return { keyId: created.key_id, apiKey: created.api_key };
  }

  /** Revokes an API key and the tokens exchanged from it. */
  revokeApiKey(keyId: string): void {
    this.admin(["service", "key", "revoke", keyId]);
  }

  /** The audit lines the server has logged (stderr) since it last started for `event` with
   * `outcome`, about `userId` when given. */
  audits(event: string, outcome: string, userId?: string): number {
    return this.stderr
      .split("\n")
      .filter(
        (line) =>
          / audit: /.test(line) &&
          line.includes(`event="${event}"`) &&
          line.includes(`outcome="${outcome}"`) &&
          (userId === undefined || line.includes(`user_id="${userId}"`)),
      ).length;
  }

  /** Enrolls TOTP; answers the otpauth:// URI. */
  enrollTotp(identifier: string): string {
    const enrolled = this.admin(["user", "totp", "enroll", identifier]) as { otpauth_uri?: string };
    if (!enrolled.otpauth_uri) {
      throw new Error("totp enroll answered no otpauth_uri");
    }
    return enrolled.otpauth_uri;
  }
}

/** RPCs a client sent, by method name (`VerifyToken`, `Login`, ...), counted by an interceptor. */
export class RpcCounts {
  private readonly counts = new Map<string, number>();

  readonly interceptor: Interceptor = (next) => async (request) => {
    this.counts.set(request.method.name, this.get(request.method.name) + 1);
    return next(request);
  };

  get(method: string): number {
    return this.counts.get(method) ?? 0;
  }
}

/** The WatchRevocations calls a client made, each with what it asked and the events it
 * received, seen by an interceptor (the stream itself is untouched). */
export class FeedRecorder {
  readonly streams: Array<{ afterSequence: bigint; events: RevocationEvent[] }> = [];

  readonly interceptor: Interceptor = (next) => async (request) => {
    if (!request.stream || request.method.name !== "WatchRevocations") {
      return next(request);
    }
    const stream = { afterSequence: -1n, events: [] as RevocationEvent[] };
    this.streams.push(stream);
    const response = await next({
      ...request,
      message: tap(request.message, (message) => {
        stream.afterSequence = (message as unknown as { afterSequence: bigint }).afterSequence;
      }),
    });
    if (!response.stream) {
      return response;
    }
    return {
      ...response,
      message: tap(response.message, (event) => stream.events.push(event as unknown as RevocationEvent)),
    };
  };

  /** Every event received, over all streams. */
  get events(): RevocationEvent[] {
    return this.streams.flatMap((stream) => stream.events);
  }
}

async function* tap<T>(source: AsyncIterable<T>, see: (item: T) => void): AsyncIterable<T> {
  for await (const item of source) {
    see(item);
    yield item;
  }
}

/** Polls `check` (every 10 ms) until it answers something other than undefined or false;
 * fails after `timeoutMs` with `what`. Answers the value and how long it took. */
export async function eventually<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) {
      return { value, ms: Date.now() - start };
    }
    if (Date.now() - start > timeoutMs) {
      throw new Error(`not within ${timeoutMs} ms: ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Waits until the client's revocation feed is subscribed (its first verify starts it). */
export async function subscribed(client: Client, timeoutMs = 10_000): Promise<void> {
  await eventually("the revocation feed subscribed", () => client.revocationFeedStatus.subscribed, timeoutMs);
}

function base32Decode(text: string): Buffer {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const char of text.toUpperCase().replace(/=+$/, "")) {
    const index = alphabet.indexOf(char);
    if (index < 0) {
      throw new Error(`not base32: ${char}`);
    }
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

/** The RFC 6238 code (SHA-1, 6 digits, 30 s) of an otpauth:// URI's secret at `atMs`. */
export function totpCode(uri: string, atMs: number = Date.now()): string {
  const secret = new URL(uri).searchParams.get("secret");
  if (!secret) {
    throw new Error("otpauth URI without a secret");
  }
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(atMs / 1000 / 30)));
  const sum = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = sum[sum.length - 1]! & 0x0f;
  const value = sum.readUInt32BE(offset) & 0x7fffffff;
  return String(value % 1_000_000).padStart(6, "0");
}

/** A 6-digit code that is none of the codes the server accepts around `atMs`
 * (the previous, current and next step). */
export function wrongTotpCode(uri: string, atMs: number = Date.now()): string {
  const accepted = new Set([-30_000, 0, 30_000].map((step) => totpCode(uri, atMs + step)));
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, "0");
    if (!accepted.has(code)) {
      return code;
    }
  }
}

/** A clock the client's cache reads; tests move it instead of sleeping. */
export class MovableClock {
  private offset = 0;
  readonly now = (): number => Date.now() + this.offset;
  advance(ms: number): void {
    this.offset += ms;
  }
}
