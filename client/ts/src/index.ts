// The TypeScript client of st-peter, the central authentication service.
//
// verifyToken answers are cached (never past the token's own expiry, keyed by a SHA-256 of
// the token, single flight on concurrent misses) and kept honest by st-peter's revocation
// feed: one stream per client, opened by the first verify, that evicts an answer as soon as
// a logout, session revoke, disabled user or role change makes it wrong. While subscribed
// an answer is served up to `cacheTtlMs` (5 min); while not (connecting, st-peter
// restarting, `revocationFeed: false`) only up to `cacheFallbackTtlMs` (5 s), which is how
// long a token revoked elsewhere can still pass here then.
//
// With the `apiKey` option the client speaks as a service account: it exchanges the key for
// a short-lived token (again before that expires) and sends it as caller credentials.
export { connect, Client, type ClientOptions } from "./client.js";
export type { RevocationFeedStatus } from "./feed.js";
export { Account, TotpEnrollment, type RevokeOtherSessionsOption, type QrCodeOptions } from "./account.js";
export {
  StPeterError,
  InvalidTokenError,
  UnavailableError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  FailedPreconditionError,
  RateLimitedError,
  ApiKeyRejectedError,
  type ErrorKind,
} from "./errors.js";
export type {
  User,
  UserKind,
  VerifiedUser,
  LoginResult,
  Authenticated,
  TwoFactor,
  Failed,
  TwoFactorMethod,
  FailureReason,
  AccountInfo,
  Session,
  TotpConfirmation,
} from "./model.js";
export {
  passkeyCredentialJson,
  type Passkey,
  type PasskeyCredentialJson,
  type PasskeyLoginChallenge,
  type PasskeyLoginOptions,
  type PasskeyOptionsJson,
  type PasskeyRegistration,
} from "./passkey.js";
export { SESSION_COOKIE, bearer, tokenFromHeaders, tokenFromRequest, type RequestHeaders } from "./token.js";
export { VERSION } from "./version.js";
