// The verification cache, keyed by a SHA-256 of the token so raw tokens are not kept as
// keys (the revocation feed names revoked tokens by the same hash). Answers are served for
// the long TTL while the feed is subscribed and for the short fallback TTL while it is
// not, never past the token's own expiry.
import { createHash } from "node:crypto";

import type { VerifiedUser } from "./model.js";

export interface CacheSettings {
  /** How long a valid answer is served while subscribed to the feed (capped by the
   * token's expiry), in ms. */
  ttlMs: number;
  /** How long a valid answer is served while not subscribed, in ms. */
  fallbackTtlMs: number;
  /** How long an UNAUTHENTICATED answer is served, in ms; 0 disables it. */
  invalidTtlMs: number;
  /** Most answers held; the least recently used go first. */
  capacity: number;
  /** The clock freshness is judged by (ms since the epoch). */
  now: () => number;
}

/** What st-peter said about a token: a user, or null for UNAUTHENTICATED. */
export type Answer = VerifiedUser | null;

interface Cached {
  answer: Answer;
  /** When the fetch that got the answer began. */
  filledAt: number;
  /** The TTL (or the token's expiry) ends here, subscribed or not. */
  freshUntil: number;
}

export function tokenKey(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("base64");
}

/** The cache key of a token the feed names by its SHA-256. */
export function hashKey(sha256: Uint8Array): string {
  return Buffer.from(sha256.buffer, sha256.byteOffset, sha256.byteLength).toString("base64");
}

export class VerifyCache {
  private readonly entries = new Map<string, Cached>();
  /** The keys of each user's cached answers, for the feed's user events. */
  private readonly byUser = new Map<string, Set<string>>();
  private readonly inFlight = new Map<string, Promise<Answer>>();
  // An answer fetched while an eviction happened is not stored, so a verify racing a
  // logout (or a revocation the feed reports) cannot put the stale answer back.
  private evictions = 0;
  /** Whether the revocation feed is subscribed now: answers get the long TTL. */
  subscribed = false;

  constructor(private readonly settings: CacheSettings) {}

  get size(): number {
    return this.entries.size;
  }

  /** The cached answer for `key`, or the answer of `fetch`, run once however many callers
   * miss on the same key at once. Errors other than an invalid token (answered as null by
   * `fetch`) reach every waiting caller and are never cached. */
  async getOrFetch(key: string, fetch: () => Promise<Answer>): Promise<Answer> {
    const cached = this.entries.get(key);
    if (cached) {
      const now = this.settings.now();
      if (now < cached.freshUntil && (this.servesLong(cached) || now < cached.filledAt + this.settings.fallbackTtlMs)) {
        // Most recently used goes last.
        this.entries.delete(key);
        this.entries.set(key, cached);
        return cached.answer;
      }
      // Past the fallback TTL only: kept, in case the feed is back before it is asked
      // again (the replay evicts whatever changed meanwhile); a fetch replaces it.
      if (now >= cached.freshUntil) {
        this.remove(key);
      }
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      const generation = this.evictions;
      const filledAt = this.settings.now();
      const fetching: Promise<Answer> = fetch()
        .then((answer) => {
          this.put(key, answer, filledAt, generation);
          return answer;
        })
        .finally(() => {
          // An eviction may have replaced this fetch with a newer one: leave that alone.
          if (this.inFlight.get(key) === fetching) {
            this.inFlight.delete(key);
          }
        });
      pending = fetching;
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  /** Drops the answer for `key` and any fetch of it in flight: a caller that comes after
   * the eviction gets a fetch of its own, never one that began before it (whose answer
   * may predate a logout), and that older fetch's answer is not stored. */
  evict(key: string): void {
    this.evictions++;
    this.remove(key);
    this.inFlight.delete(key);
  }

  /** The user of the answer cached for `key`, fresh or not; undefined when none is cached
   * or st-peter answered that the token is not valid. */
  userIdOf(key: string): string | undefined {
    return this.entries.get(key)?.answer?.user.userId;
  }

  /** Drops every answer about `userId`. Which user a fetch in flight is about is not known
   * until it answers, so none of them is joined or stored after this. */
  evictUser(userId: string): void {
    this.evictions++;
    for (const key of this.byUser.get(userId) ?? []) {
      this.entries.delete(key);
    }
    this.byUser.delete(userId);
    this.inFlight.clear();
  }

  /** Drops every answer and voids every fetch in flight. */
  clear(): void {
    this.evictions++;
    this.entries.clear();
    this.byUser.clear();
    this.inFlight.clear();
  }

  /** Negative answers keep their own TTL: a revocation never makes them wrong. */
  private servesLong(cached: Cached): boolean {
    return this.subscribed || cached.answer === null;
  }

  private remove(key: string): void {
    const cached = this.entries.get(key);
    if (!cached) {
      return;
    }
    this.entries.delete(key);
    const userId = cached.answer?.user.userId;
    if (userId !== undefined) {
      const keys = this.byUser.get(userId);
      keys?.delete(key);
      if (keys?.size === 0) {
        this.byUser.delete(userId);
      }
    }
  }

  private put(key: string, answer: Answer, filledAt: number, generation: number): void {
    const lifetime =
      answer === null
        ? this.settings.invalidTtlMs
        : Math.min(this.settings.ttlMs, answer.expiresAt.getTime() - filledAt);
    if (lifetime <= 0 || this.settings.capacity <= 0 || generation !== this.evictions) {
      return;
    }
    this.remove(key);
    this.entries.set(key, { answer, filledAt, freshUntil: filledAt + lifetime });
    if (answer !== null) {
      const userId = answer.user.userId;
      let keys = this.byUser.get(userId);
      if (!keys) {
        this.byUser.set(userId, (keys = new Set()));
      }
      keys.add(key);
    }
    while (this.entries.size > this.settings.capacity) {
      this.remove(this.entries.keys().next().value as string);
    }
  }
}
