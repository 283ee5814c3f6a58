// Service identity mode: the client speaks to st-peter as a service account. It exchanges
// the API key for a short-lived session token of the account on first need, keeps it,
// exchanges again once less than a third of the token's lifetime is left (one exchange
// however many calls need a token at once), and sends it as caller credentials.
import { inspect } from "node:util";

import { Code } from "@connectrpc/connect";

import { tokenKey } from "./cache.js";
import { ApiKeyRejectedError, callerCredentialsRefused, type StPeterError } from "./errors.js";
import type { Authenticated } from "./model.js";

/** A token of the service account, as this client holds it. */
export interface ServiceToken {
  readonly token: string;
  /** Its SHA-256, as the revocation feed names revoked tokens. */
  readonly key: string;
  /** The service account's user_id: the actor of lookupUser as the service. */
  readonly userId: string;
  /** Past this (ms, the client's clock) the next call exchanges again: two thirds of the
   * way from the exchange to the token's expiry. */
  readonly refreshAt: number;
  readonly expiresAt: number;
}

export interface IdentitySettings {
  /** ExchangeApiKey with the client's own key; rejects with StPeterError kinds. */
  exchange: (apiKey: string) => Promise<Authenticated>;
  /** The clock refreshes are judged by (ms since the epoch). */
  now: () => number;
}

/** How long a refused key is answered without asking st-peter again, in ms: a service
 * under load with a revoked key would otherwise make one exchange after another and run
 * into the failure throttle of its address. */
const REJECTED_FOR_MS = 1_000;

export class ServiceIdentity {
  readonly #apiKey: string;
  readonly #settings: IdentitySettings;
  #current: ServiceToken | undefined;
  #pending: Promise<ServiceToken> | undefined;
  #rejected: { error: StPeterError; until: number } | undefined;

  constructor(apiKey: string, settings: IdentitySettings) {
    this.#apiKey = apiKey;
    this.#settings = settings;
  }

  /** The token to send now: the cached one while fresh, else a new exchange (shared by
   * every caller meanwhile). When that exchange cannot reach st-peter (or is throttled)
   * and the cached token has not expired, the cached one is still good enough. */
  async token(): Promise<ServiceToken> {
    const now = this.#settings.now();
    const current = this.#current;
    if (current && now < current.refreshAt) {
      return current;
    }
    const rejected = this.#rejected;
    if (rejected && now < rejected.until) {
      // A new error each time: callers may annotate what they catch.
      throw new ApiKeyRejectedError("api_key_rejected", rejected.error.code, rejected.error.detail, {
        cause: rejected.error,
      });
    }
    if (!this.#pending) {
      const pending = this.#exchange();
      this.#pending = pending;
      // Settled: the next caller that finds the token stale exchanges again.
      void pending.then(
        () => this.#forget(pending),
        () => this.#forget(pending),
      );
    }
    try {
      return await this.#pending;
    } catch (error) {
      const kind = (error as StPeterError).kind;
      if (current && this.#current === current && now < current.expiresAt && (kind === "unavailable" || kind === "rate_limited")) {
        return current;
      }
      throw error;
    }
  }

  /** Drops `token` (st-peter refused it as caller credentials), unless a newer one has
   * replaced it already: the next token() exchanges. */
  drop(token: ServiceToken): void {
    if (this.#current === token) {
      this.#current = undefined;
    }
  }

  /** The revocation feed reports a revoked token: when it is the current one (its key was
   * revoked, or an operator revoked the session), the next call exchanges first instead of
   * being refused. */
  revoked(key: string): void {
    if (this.#current?.key === key) {
      this.#current = undefined;
    }
  }

  /** Runs `send` with the current token; when st-peter refuses that token as caller
   * credentials (or `retry` says so), drops it, exchanges once more and runs `send` once
   * more. */
  async call<T>(
    send: (token: ServiceToken) => Promise<T>,
    retry: (error: unknown) => boolean = callerCredentialsRefused,
  ): Promise<T> {
    const token = await this.token();
    try {
      return await send(token);
    } catch (error) {
      if (!retry(error)) {
        throw error;
      }
      this.drop(token);
      return send(await this.token());
    }
  }

  async #exchange(): Promise<ServiceToken> {
    const issuedAt = this.#settings.now();
    try {
      const session = await this.#settings.exchange(this.#apiKey);
      const expiresAt = session.expiresAt.getTime();
      const token: ServiceToken = {
        token: session.token,
        key: tokenKey(session.token),
        userId: session.user.userId,
        refreshAt: issuedAt + ((expiresAt - issuedAt) * 2) / 3,
        expiresAt,
      };
      this.#current = token;
      this.#rejected = undefined;
      return token;
    } catch (caught) {
      let error = caught as StPeterError;
      // The key is configuration, not input of the call that needed it: a malformed one
      // is refused like an unknown one, not as an invalid argument of that call.
      if (error.kind === "invalid_argument") {
        error = new ApiKeyRejectedError("api_key_rejected", Code.InvalidArgument, error.detail, { cause: error });
      }
      if (error.kind === "api_key_rejected") {
        // Tokens of a refused key are revoked with it.
        this.#current = undefined;
        this.#rejected = { error, until: this.#settings.now() + REJECTED_FOR_MS };
      }
      throw error;
    }
  }

  #forget(pending: Promise<ServiceToken>): void {
    if (this.#pending === pending) {
      this.#pending = undefined;
    }
  }

  /** @internal */
  toJSON(): Record<string, string> {
    return { apiKey: "[redacted]" };
  }

  /** @internal */
  [inspect.custom](): string {
    return "ServiceIdentity { apiKey: [redacted], token: [redacted] }";
  }
}
