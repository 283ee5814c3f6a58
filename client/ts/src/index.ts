// The TypeScript client of st-peter, the central authentication service.
//
// verifyToken answers are cached about 60 s (never past the token's own expiry, keyed by a
// SHA-256 of the token, single flight on concurrent misses), so a token revoked elsewhere
// can still pass on this client for up to that long: shorten it with `cacheTtlMs`.
export { connect, Client, type ClientOptions } from "./client.js";
export {
  StPeterError,
  InvalidTokenError,
  UnavailableError,
  InvalidArgumentError,
  NotFoundError,
  type ErrorKind,
} from "./errors.js";
export type {
  User,
  VerifiedUser,
  LoginResult,
  Authenticated,
  TwoFactor,
  Failed,
  TwoFactorMethod,
  FailureReason,
} from "./model.js";
export { SESSION_COOKIE, bearer, tokenFromHeaders, tokenFromRequest, type RequestHeaders } from "./token.js";
export { VERSION } from "./version.js";
