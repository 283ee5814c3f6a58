// Runs the example: `node src/server.js` (npm start). Settings from the environment:
//   ST_PETER_TARGET             st-peter's address, default http://127.0.0.1:50051
//   LISTEN                      where to serve, default 127.0.0.1:3000 (port 0: any free port)
//   ACCOUNT_WEB_CSRF_KEY        base64 key of the CSRF tokens (default: random per start)
//   ACCOUNT_WEB_SECURE_COOKIES  1: mark the cookies Secure (serve it behind HTTPS then)
// Prints `account-web listening on http://HOST:PORT` once it accepts connections.
import http from "node:http";

import { connect } from "@st-peter/client";

import { createApp } from "./app.js";

const target = process.env.ST_PETER_TARGET || "http://127.0.0.1:50051";
const listen = process.env.LISTEN || "127.0.0.1:3000";
const colon = listen.lastIndexOf(":");
const host = listen.slice(0, colon) || "127.0.0.1";
const port = Number(listen.slice(colon + 1));

const stPeter = connect(target);
const options = { stPeter, secureCookies: process.env.ACCOUNT_WEB_SECURE_COOKIES === "1" };
if (process.env.ACCOUNT_WEB_CSRF_KEY) {
  options.csrfKey = Buffer.from(process.env.ACCOUNT_WEB_CSRF_KEY, "base64");
}
const server = http.createServer(createApp(options));

server.listen(port, host, () => {
  const address = server.address();
  console.log(`account-web listening on http://${address.address}:${address.port} (st-peter at ${target})`);
});

function stop() {
  server.close();
  server.closeAllConnections();
  stPeter.close();
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
