// A Node.js process that uses the client must survive st-peter restarting under it (GOAWAY
// on graceful stop, reset connections; revocation feed streams ending with them) and call
// successfully once it is back. The client
// runs in a child process (restart-caller.ts), so a crash is seen as that process dying.
import assert from "node:assert/strict";
import { fork, type ChildProcess } from "node:child_process";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import type { Authenticated } from "../src/index.js";
import type { Command, Counts, Event, Mode } from "./restart-caller.js";
import { TestServer } from "./harness.js";

const callerScript = fileURLToPath(new URL("./restart-caller.js", import.meta.url));

/** The caller process: sends it commands, waits for its events, knows how it ended. */
class Caller {
  private readonly events: Event[] = [];
  private waiter: (() => void) | undefined;
  private stderr = "";
  private exit: string | undefined;

  private constructor(private readonly child: ChildProcess) {
    child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
    child.on("message", (event: Event) => {
      this.events.push(event);
      this.waiter?.();
    });
    child.on("exit", (code, signal) => {
      this.exit = signal ? `signal ${signal}` : `code ${code}`;
      this.waiter?.();
    });
  }

  static async start(server: TestServer, token: string, mode: Mode, apiKey?: string): Promise<Caller> {
    const child = fork(callerScript, [], { stdio: ["ignore", "ignore", "pipe", "ipc"] });
    const caller = new Caller(child);
    caller.send({ type: "start", target: server.target, token, handle: "cashier", mode, ...(apiKey ? { apiKey } : {}) });
    await caller.next("ready", 20_000);
    return caller;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** Why the process is gone, with what it printed (an uncaught exception shows here). */
  get obituary(): string {
    return `caller exited (${this.exit ?? "still running"}):\n${this.stderr}`;
  }

  assertAlive(when: string): void {
    assert.ok(this.alive, `${when}: ${this.obituary}`);
  }

  send(command: Command): void {
    this.child.send(command);
  }

  /** The next event of a type, within `timeoutMs`; rejects when the process dies first. */
  async next<T extends Event["type"]>(type: T, timeoutMs: number): Promise<Extract<Event, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.events.findIndex((event) => event.type === type);
      if (index >= 0) {
        return this.events.splice(index, 1)[0] as Extract<Event, { type: T }>;
      }
      this.assertAlive(`waiting for ${type}`);
      const left = deadline - Date.now();
      assert.ok(left > 0, `no ${type} from the caller within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  async counts(): Promise<Counts> {
    this.send({ type: "report" });
    return this.next("report", 5_000);
  }

  /** Makes the caller call once; answers whether the call succeeded. */
  async callOnce(): Promise<Extract<Event, { type: "called" }>> {
    this.send({ type: "call" });
    return this.next("called", 10_000);
  }

  /** Waits until `more` calls beyond `since` have succeeded. */
  async succeeds(since: Counts, more: number, timeoutMs: number): Promise<Counts> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = await this.counts();
      if (now.ok >= since.ok + more) {
        return now;
      }
      assert.ok(Date.now() < deadline, `${more} more calls did not succeed within ${timeoutMs} ms: ${JSON.stringify(now)}`);
      await sleep(20);
    }
  }

  /** Stops its loops; answers whether its calls succeeded again, then waits for its exit. */
  async finish(): Promise<Extract<Event, { type: "finished" }>> {
    this.send({ type: "finish" });
    const finished = await this.next("finished", 30_000);
    const deadline = Date.now() + 10_000;
    while (this.alive && Date.now() < deadline) {
      await sleep(20);
    }
    assert.equal(this.exit, "code 0", this.obituary);
    return finished;
  }

  kill(): void {
    if (this.alive) {
      this.child.kill("SIGKILL");
    }
  }
}

/** A server with the cashier's session; with `service`, one that answers only callers with
 * credentials, with tokens of 3 s, and a service account's API key for the caller. */
async function serverWithSession(service = false): Promise<{ server: TestServer; token: string; apiKey?: string }> {
  const server = await TestServer.start(service ? ["--api-token-ttl", "3s", "--require-caller-credentials"] : []);
  try {
    server.addUser({ handle: "cashier", password: "knock knock, who goes there" });
    const { client } = server.client();
    const session = (await client.login("cashier", "knock knock, who goes there")) as Authenticated;
    assert.equal(session.kind, "authenticated");
    client.close();
    if (!service) {
      return { server, token: session.token };
    }
    server.addService("till");
    return { server, token: session.token, apiKey: server.createApiKey("till").apiKey };
  } catch (error) {
    // A server left running would keep this test process (and the suite) from ending.
    await server.close();
    throw error;
  }
}

/** Calls that failed while st-peter was away failed as UnavailableError, nothing else. */
function assertOnlyUnavailable(counts: Counts): void {
  const others = Object.keys(counts.errors).filter((name) => name !== "UnavailableError/unavailable");
  assert.deepEqual(others, [], `calls failed otherwise than unavailable: ${JSON.stringify(counts.errors)}`);
}

/** Restarts st-peter `restarts` times (stopped with `signal`) under a caller in a loop;
 * with `service`, a caller in service identity mode, and st-peter down for `downMs`. */
async function restartUnderLoad(
  signal: "SIGTERM" | "SIGKILL",
  restarts: number,
  service?: { downMs: (restart: number) => number },
): Promise<Counts> {
  const { server, token, apiKey } = await serverWithSession(service !== undefined);
  let caller: Caller | undefined;
  try {
    caller = await Caller.start(server, token, "loop", apiKey);
    let counts = await caller.succeeds(await caller.counts(), 20, 10_000);
    for (let restart = 1; restart <= restarts; restart++) {
      await server.stop(signal);
      // Calls meet refused connections meanwhile.
      await sleep(service ? service.downMs(restart) : 50 + 50 * restart);
      caller.assertAlive(`after stop ${restart}`);
      await server.resume(); // same port, same database
      counts = await caller.succeeds(counts, 20, 15_000);
      caller.assertAlive(`after restart ${restart}`);
    }
    const finished = await caller.finish();
    assert.ok(finished.recovered, `calls did not succeed after the restarts: ${JSON.stringify(finished)}`);
    assert.ok(finished.feedSubscribed, `the revocation feed did not subscribe again: ${JSON.stringify(finished)}`);
    assert.ok(finished.feedSubscriptions > restarts, `the feed did not resubscribe per restart: ${JSON.stringify(finished)}`);
    assertOnlyUnavailable(finished);
    return finished;
  } finally {
    caller?.kill();
    await server.close();
  }
}

test("a process calling in a loop survives five restarts of st-peter, and its calls succeed after each", async (t) => {
  // SIGTERM: st-peter sends GOAWAY on its connections, finishes what is in flight, exits.
  const finished = await restartUnderLoad("SIGTERM", 5);
  t.diagnostic(`caller: ${JSON.stringify(finished)}`);
  assert.ok(finished.goaways >= 1, `the restarts sent no GOAWAY: ${JSON.stringify(finished)}`);
});

test("a process calling in a loop survives st-peter being killed three times (connections reset)", async (t) => {
  const finished = await restartUnderLoad("SIGKILL", 3);
  t.diagnostic(`caller: ${JSON.stringify(finished)}`);
});

test("a process in service identity mode survives st-peter restarting, also while its token expires", async (t) => {
  // Tokens live 3 s and are exchanged again after 2 s: the last stop outlasts the token, so
  // exchanges fail (unavailable) while st-peter is away and succeed once it is back. A
  // refused call or exchange must never surface as an unhandled rejection.
  const finished = await restartUnderLoad("SIGTERM", 3, { downMs: (restart) => (restart === 3 ? 3_500 : 100) });
  t.diagnostic(`caller: ${JSON.stringify(finished)}`);
});

test("a call the moment an idle connection receives GOAWAY does not crash the process", async () => {
  const { server, token } = await serverWithSession();
  let caller: Caller | undefined;
  try {
    caller = await Caller.start(server, token, "idle");
    for (let restart = 1; restart <= 3; restart++) {
      const before = await caller.counts();
      await server.stop(); // GOAWAY on the caller's idle connection; it calls at once
      const deadline = Date.now() + 5_000;
      while ((await caller.counts()).goaways === before.goaways) {
        assert.ok(Date.now() < deadline, `stop ${restart} sent the idle connection no GOAWAY`);
        await sleep(10);
      }
      // A late error of the torn-down connection would surface within a few event-loop turns.
      await sleep(200);
      caller.assertAlive(`after the GOAWAY of stop ${restart}`);
      await server.resume();
      // The next call after st-peter is back succeeds (the cache is off: on the wire).
      const called = await caller.callOnce();
      assert.ok(called.succeeded, `the first call after restart ${restart} failed: ${JSON.stringify(called)}`);
    }
    const finished = await caller.finish();
    assert.ok(finished.recovered, JSON.stringify(finished));
    assertOnlyUnavailable(finished);
  } finally {
    caller?.kill();
    await server.close();
  }
});
