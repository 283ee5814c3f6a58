import type * as http2 from "node:http2";
import { inspect } from "node:util";

import { Code, createClient, type Client as RpcClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { Account } from "./account.js";
import { VerifyCache, tokenKey, type Answer } from "./cache.js";
import { Connection } from "./connection.js";
import { FEED_DEFAULTS, RevocationFeed, type RevocationFeedStatus } from "./feed.js";
import {
  callerCredentialsRefused,
  fromExchange,
  fromRpc,
  invalidToken,
  StPeterError,
  UnavailableError,
} from "./errors.js";
import { AccountService, AuthService, type RevocationEvent } from "./genpb/st_peter/auth/v1/auth_pb.js";
import { ServiceIdentity, type ServiceToken } from "./identity.js";
import { bearer } from "./token.js";
import {
  authenticatedFrom,
  loginResultFrom,
  userFrom,
  verifiedFrom,
  type Authenticated,
  type LoginResult,
  type User,
  type VerifiedUser,
} from "./model.js";
import {
  optionsJson,
  type PasskeyCredentialJson,
  type PasskeyLoginChallenge,
  type PasskeyLoginOptions,
} from "./passkey.js";

export interface ClientOptions {
  /** How long a valid answer is cached (never past the token's expiry) while the
   * revocation feed is subscribed, in ms. Default 300 000. The feed evicts an answer as
   * soon as it is wrong, so this only bounds the memory idle tokens hold and how long a
   * fault the feed cannot see would last. */
  cacheTtlMs?: number;
  /** How long a valid answer is served while the revocation feed is not subscribed (not
   * yet, reconnecting, or turned off), in ms. Default 5 000. A token revoked elsewhere can
   * pass here for up to this long then; shorter means sooner. */
  cacheFallbackTtlMs?: number;
  /** Subscribe to st-peter's revocation feed (one stream per client, opened by the first
   * verifyToken) so that cached answers are evicted the moment they become wrong. Default
   * true. Off, answers are served for `cacheFallbackTtlMs` at most. */
  revocationFeed?: boolean;
  /** A feed stream that sends nothing for this long is taken for dead (a hung server, a
   * silently dropped connection) and replaced, in ms. Default 45 000: three of the 15 s
   * checkpoints st-peter sends while there is nothing else. */
  revocationFeedSilenceMs?: number;
  /** How long an UNAUTHENTICATED answer is cached, in ms. Default 5 000; 0 disables it. */
  invalidTokenTtlMs?: number;
  /** Most tokens cached at once. Default 10 000. */
  cacheCapacity?: number;
  /** Deadline of each call, in ms. Default 5 000. */
  requestTimeoutMs?: number;
  /** TLS settings for an https:// target (a private CA, client certificates). */
  tls?: Pick<http2.SecureClientSessionOptions, "ca" | "cert" | "key" | "servername">;
  /** The clock the cache judges freshness by, in ms since the epoch (tests move it). */
  now?: () => number;
  /** Connect interceptors run on every call (to add metadata, log, count). */
  interceptors?: Interceptor[];
  /** Service identity mode: the API key (`stk_...`) of a service account. The client
   * exchanges it for a short-lived token of the account on first need and again before
   * that expires, sends the token as caller credentials (`authorization: Bearer`) with
   * verifyToken, lookupUser and the revocation feed, and lets `lookupUser(identifier)` act
   * as the service. Neither the key nor the token is ever printed. */
  apiKey?: string;
}

/**
 * Makes a client for `target` (`http://host:port`, or `https://host:port` for TLS). Lazy:
 * nothing is dialled until the first call, so a dead server shows up as an
 * UnavailableError then, not here. Share one client per process (it holds one revocation
 * feed subscription) and `close()` it when done; neither an idle connection nor the feed
 * keeps the process alive by itself.
 */
export function connect(target: string, options: ClientOptions = {}): Client {
  return new Client(target, options);
}

export class Client {
  private readonly rpc: RpcClient<typeof AuthService>;
  private readonly accountRpc: RpcClient<typeof AccountService>;
  private readonly connection: Connection;
  private readonly cache: VerifyCache;
  private readonly feed: RevocationFeed | undefined;
  private readonly timeoutMs: number;
  readonly #target: string;
  readonly #identity: ServiceIdentity | undefined;

  constructor(target: string, options: ClientOptions = {}) {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      throw new TypeError(`invalid target ${JSON.stringify(target)}: want http(s)://host:port`);
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.port === "" || url.pathname !== "/") {
      throw new TypeError(`invalid target ${JSON.stringify(target)}: want http(s)://host:port`);
    }
    const baseUrl = url.origin;
    this.#target = baseUrl;
    if (options.apiKey !== undefined) {
      if (options.apiKey === "") {
        throw new TypeError("apiKey: must not be empty");
      }
      this.#identity = new ServiceIdentity(options.apiKey, {
        exchange: (apiKey) => this.exchangeApiKey(apiKey),
        now: options.now ?? Date.now,
      });
    }
    this.connection = new Connection(baseUrl, url.protocol === "https:" ? options.tls : undefined);
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.connection,
      interceptors: options.interceptors ?? [],
    });
    this.rpc = createClient(AuthService, transport);
    this.accountRpc = createClient(AccountService, transport);
    this.timeoutMs = options.requestTimeoutMs ?? 5_000;
    this.cache = new VerifyCache({
      ttlMs: options.cacheTtlMs ?? 300_000,
      fallbackTtlMs: options.cacheFallbackTtlMs ?? 5_000,
      invalidTtlMs: options.invalidTokenTtlMs ?? 5_000,
      capacity: options.cacheCapacity ?? 10_000,
      now: options.now ?? Date.now,
    });
    if (options.revocationFeed ?? true) {
      this.feed = new RevocationFeed(
        this.cache,
        (afterSequence, signal) => this.watch(afterSequence, signal),
        { ...FEED_DEFAULTS, silenceMs: options.revocationFeedSilenceMs ?? FEED_DEFAULTS.silenceMs },
        (key) => this.#identity?.revoked(key),
      );
    }
  }

  /**
   * Who is this token? Answers from the cache when it can; concurrent misses for one token
   * make a single RPC. Rejects with InvalidTokenError for an invalid token and with
   * UnavailableError when st-peter cannot be asked (never cached). In service identity
   * mode, ApiKeyRejectedError when st-peter refuses the client's own key; without it,
   * PermissionDeniedError from a st-peter that answers only callers with credentials
   * (neither is cached, nor says anything about the token).
   */
  async verifyToken(token: string): Promise<VerifiedUser> {
    this.feed?.start();
    const answer = await this.cache.getOrFetch(tokenKey(token), async (): Promise<Answer> => {
      try {
        return verifiedFrom(
          await this.asCaller((headers) => this.rpc.verifyToken({ token }, { timeoutMs: this.timeoutMs, headers })),
        );
      } catch (error) {
        const mapped = fromRpc(error);
        if (mapped.kind === "invalid_token") {
          return null;
        }
        throw mapped;
      }
    });
    if (answer === null) {
      throw invalidToken();
    }
    // A copy, so a caller's changes never reach the cached answer.
    return { user: { ...answer.user }, roles: [...answer.roles], expiresAt: new Date(answer.expiresAt) };
  }

  /** How many answers the cache holds now. */
  get cachedAnswers(): number {
    return this.cache.size;
  }

  /** What the revocation feed is doing (a snapshot): whether it is subscribed, the last
   * sequence it saw, how many subscriptions it started. */
  get revocationFeedStatus(): RevocationFeedStatus {
    return this.feed?.status ?? { subscribed: false, lastSequence: 0n, subscriptions: 0 };
  }

  /** Logs in with an email (any case), phone or handle and a password. A refused login
   * resolves to `{ kind: "failed" }`; it does not reject. */
  async login(identifier: string, password: string): Promise<LoginResult> {
    try {
      return loginResultFrom(await this.rpc.login({ identifier, password }, { timeoutMs: this.timeoutMs }));
    } catch (error) {
      throw fromRpc(error);
    }
  }

  /** Finishes a login that answered `{ kind: "two_factor" }` with the user's code. */
  async verifyTwoFactor(twoFactorId: string, code: string): Promise<LoginResult> {
    try {
      return loginResultFrom(
        await this.rpc.verifyTwoFactor({ twoFactorId, code }, { timeoutMs: this.timeoutMs }),
      );
    } catch (error) {
      throw fromRpc(error);
    }
  }

  /**
   * Starts a passkey sign-in: send the answer's `optionsJson` to the page for
   * `navigator.credentials.get`, then its credential to finishPasskeyLogin with the
   * `challengeId`. With `identifier`, the options name that user's passkeys; with neither
   * option, the sign-in is discoverable; with `twoFactorId` (from a login that answered
   * `{ kind: "two_factor" }`), the passkey completes that login. FailedPreconditionError
   * when st-peter has no WebAuthn settings (`--webauthn-rp-id`, `--webauthn-origin`);
   * RateLimitedError while the login throttles hold.
   */
  async beginPasskeyLogin(options: PasskeyLoginOptions = {}): Promise<PasskeyLoginChallenge> {
    try {
      const response = await this.rpc.beginPasskeyLogin(
        { identifier: options.identifier ?? "", twoFactorId: options.twoFactorId ?? "" },
        { timeoutMs: this.timeoutMs },
      );
      return { challengeId: response.challengeId, optionsJson: optionsJson(response.optionsJson) };
    } catch (error) {
      throw fromRpc(error);
    }
  }

  /** Finishes a passkey sign-in with the browser's credential. Answers like login:
   * `{ kind: "authenticated" }`, or `{ kind: "failed" }` with `invalid_credentials` (the
   * assertion does not verify: unknown passkey, wrong origin or signature, a replay, a
   * sign counter that went backwards), `challenge_expired` (unknown, used or expired
   * `challengeId`) or `rate_limited`. Malformed JSON rejects with InvalidArgumentError
   * naming `credential_json`. */
  async finishPasskeyLogin(challengeId: string, credentialJson: PasskeyCredentialJson): Promise<LoginResult> {
    try {
      return loginResultFrom(
        await this.rpc.finishPasskeyLogin({ challengeId, credentialJson }, { timeoutMs: this.timeoutMs }),
      );
    } catch (error) {
      throw fromRpc(error);
    }
  }

  /**
   * Resolves an email, phone or handle to a user. No match rejects with NotFoundError. Not
   * cached.
   *
   * `lookupUser(identifier)` asks as the service itself (needs the `apiKey` option, and its
   * service account the platform role `st-peter:lookup`, else PermissionDeniedError).
   * `lookupUser(actorId, actorToken, identifier)` asks on behalf of an actor whose own token
   * proves who is asking.
   */
  lookupUser(identifier: string): Promise<User>;
  lookupUser(actorId: string, actorToken: string, identifier: string): Promise<User>;
  async lookupUser(first: string, actorToken?: string, identifier?: string): Promise<User> {
    if (actorToken === undefined && identifier === undefined) {
      return this.lookupAsService(first);
    }
    if (actorToken === undefined || identifier === undefined) {
      throw new TypeError("lookupUser takes (identifier) or (actorId, actorToken, identifier)");
    }
    try {
      const response = await this.asCaller((headers) =>
        this.rpc.lookupUser({ actorId: first, actorToken, identifier }, { timeoutMs: this.timeoutMs, headers }),
      );
      return userFrom(response.user);
    } catch (error) {
      throw fromRpc(error);
    }
  }

  private async lookupAsService(identifier: string): Promise<User> {
    const identity = this.#identity;
    if (!identity) {
      throw new TypeError("lookupUser(identifier) asks as the service: connect with the apiKey option, or pass an actor");
    }
    try {
      const response = await identity.call(
        (service) =>
          this.rpc.lookupUser(
            { actorId: service.userId, actorToken: service.token, identifier },
            { timeoutMs: this.timeoutMs, headers: bearerOf(service) },
          ),
        // Here the actor's token is the service's own: UNAUTHENTICATED says that it is not
        // valid (all a server that does not ask for caller credentials can say).
        (error) => callerCredentialsRefused(error) || fromRpc(error).kind === "invalid_token",
      );
      return userFrom(response.user);
    } catch (error) {
      throw fromRpc(error);
    }
  }

  /**
   * Exchanges a service account's API key (`stk_...`) for a session token of the account
   * (short-lived: 15 minutes unless st-peter is set otherwise). The `apiKey` option does
   * this by itself; this is for holding the token yourself. A key st-peter refuses
   * (unknown, expired, revoked, its account disabled) rejects with ApiKeyRejectedError,
   * never InvalidTokenError; too many refusals from one address with RateLimitedError; a
   * malformed key with InvalidArgumentError.
   */
  async exchangeApiKey(apiKey: string): Promise<Authenticated> {
    try {
      return authenticatedFrom(await this.rpc.exchangeApiKey({ apiKey }, { timeoutMs: this.timeoutMs }));
    } catch (error) {
      throw fromExchange(error);
    }
  }

  /** Revokes the token at st-peter and drops it from this client's cache. Other clients
   * drop it when their revocation feed reports it (within about a second), or, while not
   * subscribed, once their fallback TTL runs out. */
  async logout(token: string): Promise<void> {
    const key = tokenKey(token);
    this.cache.evict(key);
    try {
      await this.rpc.logout({ token }, { timeoutMs: this.timeoutMs });
    } catch (error) {
      throw fromRpc(error);
    } finally {
      // A verify that raced the logout may have cached the token again.
      this.cache.evict(key);
    }
  }

  /**
   * The account of the user whose session token this is: password change, TOTP enrollment
   * and removal, recovery codes, sessions (st-peter's AccountService, on this client's
   * connection and deadline). Makes no call; a token that is not valid shows up as an
   * InvalidTokenError from the first method called. Calls that end sessions drop this
   * client's cached verifyToken answers for the user.
   */
  account(token: string): Account {
    return new Account(token, {
      rpc: this.accountRpc,
      timeoutMs: this.timeoutMs,
      sessionsEnded: (token) => this.sessionsEnded(token),
      tokenInvalid: (token) => this.cache.evict(tokenKey(token)),
    });
  }

  /** Sessions of the token's user were ended (maybe the token's own): the same eviction as
   * a feed event about the user, when the cached answer for the token says who that is;
   * else only the token's own entry (the feed evicts the rest within a second or so). */
  private sessionsEnded(token: string): void {
    const key = tokenKey(token);
    const userId = this.cache.userIdOf(key);
    this.cache.evict(key);
    if (userId !== undefined) {
      this.cache.evictUser(userId);
    }
  }

  /** Sends a call with the service's token as caller credentials (retried once with a new
   * token when st-peter refuses it), or as it is without the `apiKey` option. */
  private asCaller<T>(send: (headers: Record<string, string>) => Promise<T>): Promise<T> {
    const identity = this.#identity;
    if (!identity) {
      return send({});
    }
    return identity.call((service) => send(bearerOf(service)));
  }

  /** One revocation feed stream, opened with the service's token of the moment. */
  private async *watch(afterSequence: bigint, signal: AbortSignal): AsyncIterable<RevocationEvent> {
    const identity = this.#identity;
    const service = identity ? await identity.token() : undefined;
    try {
      yield* this.rpc.watchRevocations(
        { afterSequence },
        { signal, headers: service ? bearerOf(service) : {} },
      );
    } catch (error) {
      // The feed resubscribes after a pause; with a new token then.
      if (service && callerCredentialsRefused(error)) {
        identity?.drop(service);
      }
      throw error;
    }
  }

  /** @internal */
  toJSON(): Record<string, string | boolean> {
    return { target: this.#target, serviceIdentity: this.#identity !== undefined };
  }

  /** @internal Shows the target, nothing of the key or the tokens. */
  [inspect.custom](): string {
    return `Client { target: ${JSON.stringify(this.#target)}${this.#identity ? ", apiKey: [redacted]" : ""} }`;
  }

  /** Stops the revocation feed and closes the connection; calls after this reject with
   * UnavailableError. */
  close(): void {
    this.feed?.close();
    this.connection.abort(new UnavailableError("unavailable", Code.Canceled, "client closed"));
  }
}

function bearerOf(service: ServiceToken): Record<string, string> {
  return { authorization: bearer(service.token) };
}

export { StPeterError };
