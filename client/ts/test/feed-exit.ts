// For feed.test.ts, run as its own Node.js process: verifies a token, waits until the
// revocation feed is subscribed, prints the feed's status, and returns without close().
// The open feed stream must not keep the process alive: it exits by itself.
import { connect } from "../src/index.js";

const [target, token] = process.argv.slice(2);
const client = connect(target!);
const verified = await client.verifyToken(token!);
const deadline = Date.now() + 10_000;
while (!client.revocationFeedStatus.subscribed && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 10));
}
const status = client.revocationFeedStatus;
console.log(JSON.stringify({ handle: verified.user.handle, subscribed: status.subscribed, subscriptions: status.subscriptions }));
