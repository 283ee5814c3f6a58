// The revocation feed, client side: one WatchRevocations subscription per client that
// evicts what each event makes stale, resubscribes from its last sequence when a stream
// ends, and tells the cache whether it is subscribed (long TTL) or not (fallback TTL).
import type { RevocationEvent } from "./genpb/st_peter/auth/v1/auth_pb.js";
import { hashKey, type VerifyCache } from "./cache.js";

/** What the revocation feed of a client is doing; see `Client.revocationFeedStatus`. */
export interface RevocationFeedStatus {
  /** A stream is open and has caught up (its first checkpoint arrived): cached answers
   * get the long TTL. False before the first verify, while resubscribing, after close(),
   * and always when the feed is turned off. */
  subscribed: boolean;
  /** The sequence of the last event received (checkpoints included); 0 before any. A
   * resubscription asks for the events after it. */
  lastSequence: bigint;
  /** WatchRevocations calls made: 1 once the first verify started the feed, one more per
   * resubscription. */
  subscriptions: number;
}

/** Opens one stream after `afterSequence`; `signal` cancels it. */
export type OpenStream = (afterSequence: bigint, signal: AbortSignal) => AsyncIterable<RevocationEvent>;

export interface FeedSettings {
  /** First wait before resubscribing, in ms; doubled per failed attempt up to `backoffMaxMs`. */
  backoffMinMs: number;
  backoffMaxMs: number;
  /** A stream that sends nothing (not even a checkpoint) for this long is dead. */
  silenceMs: number;
}

/** The server sends a checkpoint every 15 s while quiet: three missed count as dead. */
export const FEED_DEFAULTS: FeedSettings = { backoffMinMs: 100, backoffMaxMs: 5_000, silenceMs: 45_000 };

export class RevocationFeed {
  private started = false;
  private closed = false;
  private lastSequence = 0n;
  private subscriptions = 0;
  /** Cancels the open stream (close(), or the silence watchdog). */
  private abort: AbortController | undefined;
  /** Ends the wait between attempts early (close()). */
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly cache: VerifyCache,
    private readonly open: OpenStream,
    private readonly settings: FeedSettings = FEED_DEFAULTS,
    /** Told of every revoked token (by its cache key): the client's own service token may
     * be one of them. */
    private readonly tokenRevoked: (key: string) => void = () => {},
  ) {}

  get status(): RevocationFeedStatus {
    return { subscribed: this.cache.subscribed, lastSequence: this.lastSequence, subscriptions: this.subscriptions };
  }

  /** Starts the subscription unless it runs already (or the client was closed). */
  start(): void {
    if (this.started || this.closed) {
      return;
    }
    this.started = true;
    // run() handles its own errors; the catch is only so that nothing can ever surface as
    // an unhandled rejection and crash the process.
    this.run().catch(() => {});
  }

  /** Stops for good: cancels the stream, clears the timers. Nothing of the feed keeps the
   * process alive after this. */
  close(): void {
    this.closed = true;
    this.cache.subscribed = false;
    this.abort?.abort();
    clearTimeout(this.timer);
    this.wake?.();
  }

  private async run(): Promise<void> {
    let backoff = this.settings.backoffMinMs;
    while (!this.closed) {
      const caughtUp = await this.stream();
      if (this.closed) {
        return;
      }
      if (caughtUp) {
        backoff = this.settings.backoffMinMs;
      }
      // Jitter (50 % to 100 % of the step), so clients cut off together do not all come
      // back at the same moment.
      await this.sleep(backoff * (0.5 + Math.random() / 2));
      backoff = Math.min(backoff * 2, this.settings.backoffMaxMs);
    }
  }

  /** One stream, until it ends, fails or falls silent; answers whether it caught up. */
  private async stream(): Promise<boolean> {
    const abort = new AbortController();
    this.abort = abort;
    const fromNow = this.lastSequence === 0n;
    let caughtUp = false;
    const watchdog = setTimeout(() => abort.abort(), this.settings.silenceMs).unref();
    try {
      this.subscriptions++;
      for await (const event of this.open(this.lastSequence, abort.signal)) {
        watchdog.refresh();
        if (this.closed) {
          break;
        }
        this.apply(event, fromNow && !caughtUp);
        if (event.change.case === undefined && !caughtUp) {
          caughtUp = true;
          this.cache.subscribed = true;
        }
      }
    } catch {
      // UNAVAILABLE (the server restarts, lost its own feed, or is catching up), a broken
      // connection, or the watchdog: all mean resubscribe.
    } finally {
      this.cache.subscribed = false;
      clearTimeout(watchdog);
      abort.abort(); // the iterator has no return(): this is what ends the HTTP/2 stream
      this.abort = undefined;
    }
    return caughtUp;
  }

  private apply(event: RevocationEvent, firstCheckpointFromNow: boolean): void {
    this.lastSequence = event.sequence;
    switch (event.change.case) {
      case "tokenHash": {
        const key = hashKey(event.change.value);
        this.cache.evict(key);
        this.tokenRevoked(key);
        break;
      }
      case "userId":
        this.cache.evictUser(event.change.value);
        break;
      case "reset":
        this.cache.clear();
        break;
      default:
        // A checkpoint. Caught up "from now": answers cached before may predate changes
        // no stream reported, and would get the long TTL from here on.
        if (firstCheckpointFromNow) {
          this.cache.clear();
        }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms).unref();
    }).then(() => {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.wake = undefined;
    });
  }
}
