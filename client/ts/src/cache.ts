// The verification cache: answers kept about a minute, never past the token's own expiry,
// keyed by a SHA-256 of the token so raw tokens are not kept as keys.
import { createHash } from "node:crypto";

import type { VerifiedUser } from "./model.js";

export interface CacheSettings {
  /** How long a valid answer is served (capped by the token's expiry), in ms. */
  ttlMs: number;
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
  freshUntil: number;
}

export function tokenKey(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("base64");
}

export class VerifyCache {
  private readonly entries = new Map<string, Cached>();
  private readonly inFlight = new Map<string, Promise<Answer>>();
  // An answer fetched while an eviction happened is not stored, so a verify racing a
  // logout cannot put the logged-out token back.
  private evictions = 0;

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
      if (this.settings.now() < cached.freshUntil) {
        // Most recently used goes last.
        this.entries.delete(key);
        this.entries.set(key, cached);
        return cached.answer;
      }
      this.entries.delete(key);
    }
    let pending = this.inFlight.get(key);
    if (!pending) {
      const generation = this.evictions;
      const fetching: Promise<Answer> = fetch()
        .then((answer) => {
          this.put(key, answer, generation);
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
    this.entries.delete(key);
    this.inFlight.delete(key);
  }

  private put(key: string, answer: Answer, generation: number): void {
    const now = this.settings.now();
    const lifetime =
      answer === null
        ? this.settings.invalidTtlMs
        : Math.min(this.settings.ttlMs, answer.expiresAt.getTime() - now);
    if (lifetime <= 0 || this.settings.capacity <= 0 || generation !== this.evictions) {
      return;
    }
    this.entries.delete(key);
    this.entries.set(key, { answer, freshUntil: now + lifetime });
    while (this.entries.size > this.settings.capacity) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
