// A caller for restart.test.ts, run as its own Node.js process (child_process.fork): it uses
// the client as a service would, so a crash inside the client shows as this process dying.
// It installs no uncaughtException handler on purpose. The parent steers it over IPC.
import * as http2 from "node:http2";
import { syncBuiltinESMExports } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

import { connect, StPeterError, type Client } from "../src/index.js";

export type Mode = "loop" | "idle";

/** Parent to caller. */
export type Command =
  | { type: "start"; target: string; token: string; handle: string; mode: Mode; apiKey?: string }
  | { type: "report" }
  | { type: "call" }
  | { type: "finish" };

export interface Counts {
  ok: number;
  failed: number;
  /** Failed calls by error class and kind, e.g. `UnavailableError/unavailable`. */
  errors: Record<string, number>;
  /** GOAWAY frames the client's connections received. */
  goaways: number;
}

/** Caller to parent. */
export type Event =
  | ({ type: "ready" } & Counts)
  | ({ type: "report" } & Counts)
  | ({ type: "called"; succeeded: boolean } & Counts)
  | ({ type: "finished"; recovered: boolean; feedSubscribed: boolean; feedSubscriptions: number } & Counts);

// Bounds, so this process never outlives a test that lost track of it.
const MAX_CALLS = 200_000;
const MAX_LIFETIME_MS = 90_000;
const RECOVER_WITHIN_MS = 20_000;

const counts: Counts = { ok: 0, failed: 0, errors: {}, goaways: 0 };
const clients: Client[] = [];
let token = "";
let handle = "";
let stopping = false;
let mode: Mode = "loop";
let apiKey: string | undefined;
const bornAt = Date.now();

function send(event: Event): void {
  process.send?.(event);
}

function snapshot(): Counts {
  return { ...counts, errors: { ...counts.errors } };
}

/** One verify on the wire (the cache is off); true when st-peter answered the right user. */
async function call(client = clients[0]!): Promise<boolean> {
  try {
    const verified = await client.verifyToken(token);
    if (verified.user.handle !== handle) {
      throw new Error(`verified ${verified.user.handle}, want ${handle}`);
    }
    counts.ok++;
    return true;
  } catch (error) {
    counts.failed++;
    const name =
      error instanceof StPeterError
        ? `${error.constructor.name}/${error.kind}${error.kind === "unavailable" ? "" : `: ${error.code} ${error.message}`}`
        : `other: ${String(error)}`;
    counts.errors[name] = (counts.errors[name] ?? 0) + 1;
    return false;
  }
}

function withinBounds(): boolean {
  return !stopping && counts.ok + counts.failed < MAX_CALLS && Date.now() - bornAt < MAX_LIFETIME_MS;
}

// Callers, each with its own client (its own connection), with different pauses, so that
// calls land at every moment of a restart: while a stream is open, right after the last one
// closed (an idle connection), and later.
const pauses: Array<() => Promise<unknown>> = [
  () => new Promise((resolve) => setImmediate(resolve)),
  () => new Promise((resolve) => setImmediate(resolve)),
  () => sleep(1),
  () => sleep(1),
  () => sleep(Math.floor(Math.random() * 4)),
  () => sleep(Math.floor(Math.random() * 4)),
];

async function loop(client: Client, pause: () => Promise<unknown>): Promise<void> {
  while (withinBounds()) {
    await call(client);
    await pause();
  }
}

// The cache is off, so every call is on the wire. The revocation feed is on in "loop" mode
// (its stream ends and resubscribes at every restart, beside the calls) and off in "idle"
// mode, whose connections would otherwise never be idle. With an API key each client
// speaks as that service account (service identity mode: token exchanges and refreshes
// across the restarts).
function newClient(target: string): Client {
  const client = connect(target, {
    cacheTtlMs: 0,
    invalidTokenTtlMs: 0,
    requestTimeoutMs: 2_000,
    revocationFeed: mode === "loop",
    ...(apiKey === undefined ? {} : { apiKey }),
  });
  clients.push(client);
  return client;
}

/**
 * Counts GOAWAY frames on every HTTP/2 session this process opens and, in "idle" mode,
 * makes a call the moment one arrives: the worst moment for the client, when its idle
 * connection is being torn down but has not closed yet. Test instrumentation only; it
 * wraps node:http2's connect for this process.
 */
function watchGoaways(callOnGoaway: boolean): void {
  const original = http2.connect;
  const wrapped = ((...args: Parameters<typeof http2.connect>) => {
    const session = original(...args);
    session.on("goaway", () => {
      counts.goaways++;
      if (callOnGoaway) {
        queueMicrotask(() => void call());
      }
    });
    return session;
  }) as typeof http2.connect;
  // The CommonJS object backs the ESM namespace the client's HTTP/2 library imports.
  (http2 as unknown as { default: { connect: typeof http2.connect } }).default.connect = wrapped;
  syncBuiltinESMExports();
}

const workers: Promise<void>[] = [];

async function start(command: Extract<Command, { type: "start" }>): Promise<void> {
  token = command.token;
  handle = command.handle;
  mode = command.mode;
  apiKey = command.apiKey;
  watchGoaways(command.mode === "idle");
  newClient(command.target);
  // The first call opens the connection; the server is up, so it has to succeed.
  if (!(await call())) {
    throw new Error(`first call failed: ${JSON.stringify(counts.errors)}`);
  }
  send({ type: "ready", ...snapshot() });
  if (command.mode === "loop") {
    workers.push(loop(clients[0]!, pauses[0]!));
    for (const pause of pauses.slice(1)) {
      workers.push(loop(newClient(command.target), pause));
    }
  }
}

async function finish(): Promise<void> {
  stopping = true;
  await Promise.all(workers);
  // st-peter is back: the next calls must succeed (a few may still meet the old connection).
  let recovered = false;
  const deadline = Date.now() + RECOVER_WITHIN_MS;
  while (!recovered && Date.now() < deadline) {
    recovered = await call();
    if (!recovered) {
      await sleep(50);
    }
  }
  // In "loop" mode the first client's feed subscribes again too.
  while (mode === "loop" && !clients[0]!.revocationFeedStatus.subscribed && Date.now() < deadline) {
    await sleep(20);
  }
  const feed = clients[0]!.revocationFeedStatus;
  send({
    type: "finished",
    recovered,
    feedSubscribed: feed.subscribed,
    feedSubscriptions: feed.subscriptions,
    ...snapshot(),
  });
  for (const client of clients) {
    client.close();
  }
  process.disconnect?.();
}

process.on("message", (command: Command) => {
  switch (command.type) {
    case "start":
      start(command).catch((error: unknown) => {
        console.error(error);
        process.exit(2);
      });
      break;
    case "report":
      send({ type: "report", ...snapshot() });
      break;
    case "call":
      void call().then((succeeded) => send({ type: "called", succeeded, ...snapshot() }));
      break;
    case "finish":
      void finish();
      break;
  }
});
// Never outlive the parent, nor the bound on a run.
process.on("disconnect", () => {
  stopping = true;
  void Promise.all(workers).then(() => clients.forEach((client) => client.close()));
});
setTimeout(() => process.exit(3), MAX_LIFETIME_MS + RECOVER_WITHIN_MS).unref();
