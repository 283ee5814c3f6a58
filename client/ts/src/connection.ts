// The HTTP/2 connection to st-peter: connect-node's session manager, kept from crashing the
// process when a connection dies under it, and from keeping it alive for the revocation feed.
import type * as http2 from "node:http2";

import { Http2SessionManager, type GrpcTransportOptions } from "@connectrpc/connect-node";

// connect-node does not export the interface its transports take.
type SessionManager = NonNullable<GrpcTransportOptions["sessionManager"]>;

/** The revocation feed's stream, open for as long as the client lives. */
const FEED_PATH = "/st_peter.auth.v1.AuthService/WatchRevocations";

/**
 * Http2SessionManager with a lasting "error" listener on every HTTP/2 session it carries a
 * call on.
 *
 * Why: when a session dies (st-peter stopping sends GOAWAY to an idle connection; a
 * restart resets sockets), Node.js emits the session's "error" event only once its socket
 * has closed, a few event-loop turns later. A call made in between makes the manager open
 * a new connection and remove its listeners from the dying one, so the late event has no
 * listener and Node.js raises it as an uncaught exception: the process crashes
 * (connect-es #1768). connect-node 2.3.0 keeps its listeners and so no longer crashes, but
 * it needs Node.js 22; this guard does the same for 2.1.2, the last release for Node.js 20.
 * Nothing is lost by ignoring the event here: a call on the session fails through its own
 * stream, and the manager, while it still listens, hears the same event.
 *
 * The manager keeps a connection's socket referenced (the process cannot exit) while any
 * stream is open on it. The feed's stream is always open, so this one references it only
 * while some other call is open on it: a process that forgets close() still exits.
 *
 * Keepalive PINGs stay off (the manager's default): in 2.1.2 its PING paths have bugs of
 * their own (a verification that never settles, connect-es #1746; a PING on a destroyed
 * session thrown from a timer, #1795).
 */
export class Connection implements SessionManager {
  readonly authority: string;
  private readonly sessions: Http2SessionManager;
  /** Calls other than the feed open on each session. */
  private readonly calls = new WeakMap<http2.Http2Session, number>();

  constructor(baseUrl: string, tls?: http2.SecureClientSessionOptions) {
    this.sessions = new Http2SessionManager(baseUrl, {}, tls);
    this.authority = this.sessions.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.sessions.request(method, path, headers, options);
    // Every session the manager keeps as ready carries a request before anything else can
    // happen to it (only promise jobs run between the two), so this reaches them all.
    const session = stream.session;
    if (!session) {
      return stream;
    }
    if (!session.listeners("error").includes(ignore)) {
      session.on("error", ignore);
    }
    // The manager's own listeners (ref on the first stream, unref after the last) were
    // added before these, so these decide.
    if (path === FEED_PATH) {
      if (!this.calls.get(session)) {
        session.unref();
      }
    } else if (!stream.closed) {
      this.calls.set(session, (this.calls.get(session) ?? 0) + 1);
      session.ref();
      stream.once("close", () => {
        const open = (this.calls.get(session) ?? 1) - 1;
        this.calls.set(session, open);
        if (open === 0) {
          session.unref();
        }
      });
    }
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.sessions.notifyResponseByteRead(stream);
  }

  /** Closes the connection and its streams; later calls fail with `reason`'s code. */
  abort(reason: Error): void {
    this.sessions.abort(reason);
  }
}

function ignore(): void {}
