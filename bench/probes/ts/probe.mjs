// The benchmark's window on the TypeScript client's verification cache (the revocation
// propagation rows of bench/src/propagation.rs). It imports the client built in
// client/ts/dist (scripts/bench.sh builds it) and uses its public API only, with its
// default settings: connect and verifyToken.
//
// Usage: node probe.mjs TARGET. A line protocol over stdin/stdout, one answer line per
// command:
//
//   (on start)              ready
//   verify TOKEN            valid | invalid | error MESSAGE
//   await TOKEN [LIMIT_MS]  refused UNIX_NANOS | timeout LAST_ANSWER
//
// await verifies through the cache every ~1 ms until it answers invalid, and prints the
// wall clock at that answer; with LIMIT_MS it gives up after that long.
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";

import { connect, InvalidTokenError } from "../../../client/ts/dist/index.js";

const target = process.argv[2];
if (process.argv.length !== 3) {
  process.stderr.write("usage: node probe.mjs TARGET\n");
  process.exit(2);
}
const client = connect(target);

// Pipes are written synchronously on Linux: each line is out when this returns.
const say = (line) => process.stdout.write(`${line}\n`);

// Wall clock in nanoseconds, to the microsecond (Date.now() alone has milliseconds).
const unixNanos = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;

async function verify(token) {
  try {
    await client.verifyToken(token);
    return "valid";
  } catch (error) {
    if (error instanceof InvalidTokenError) return "invalid";
    return `error ${String(error?.message ?? error).split(/\s+/).join(" ")}`;
  }
}

async function awaitRefusal(token, limitMs) {
  const started = performance.now();
  for (;;) {
    const answer = await verify(token);
    if (answer === "invalid") return `refused ${unixNanos()}`;
    if (limitMs > 0 && performance.now() - started >= limitMs) return `timeout ${answer}`;
    await sleep(1);
  }
}

say("ready");
// One command at a time, in order: the next line is read once this one is answered.
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  const fields = line.trim().split(/\s+/).filter((field) => field !== "");
  if (fields.length === 0) continue;
  const [command, token, limit] = fields;
  if (command === "verify" && fields.length === 2) {
    say(await verify(token));
  } else if (command === "await" && (fields.length === 2 || fields.length === 3)) {
    const limitMs = limit === undefined ? 0 : Number(limit);
    if (!Number.isInteger(limitMs) || limitMs < 0) say("error bad limit");
    else say(await awaitRefusal(token, limitMs));
  } else {
    say(`error unknown command ${JSON.stringify(command)}`);
  }
}
client.close();
// Nothing the client keeps open (its connection, a feed subscription) holds the probe.
process.exit(0);
