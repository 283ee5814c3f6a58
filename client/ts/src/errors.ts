import { Code, ConnectError } from "@connectrpc/connect";

/** The kinds of error a caller handles differently. */
export type ErrorKind =
  /** The token is unknown, expired, revoked, or its user is disabled (for lookupUser: the
   * actor's token is not valid or not the actor's own). Answer 401; asking again will not help. */
  | "invalid_token"
  /** st-peter could not be asked (connection refused, timeout). Answer 503 and retry later;
   * never treat it as a verdict on the token. */
  | "unavailable"
  /** The request was malformed; the message names the field. */
  | "invalid_argument"
  /** lookupUser found no user with that identifier; revokeSession got an unknown, ended or
   * another user's session id; removePasskey an unknown or another user's passkey id. */
  | "not_found"
  /** An account call's `currentPassword` is wrong (it counts towards the login throttle);
   * st-peter answers only callers with credentials and this client has none (the detail
   * starts with `caller credentials:`: connect with `apiKey`); lookupUser as a service
   * account without the platform role `st-peter:lookup`. */
  | "permission_denied"
  /** The account is not in the state the call needs: TOTP already on (beginTotpEnrollment),
   * not on (disableTotp, regenerateRecoveryCodes), or an unknown, expired or used
   * enrollment (confirmTotpEnrollment) or passkey registration (finishPasskeyRegistration);
   * or st-peter has no WebAuthn settings (beginning or finishing a passkey registration or
   * sign-in). The message names the field
   * or the settings. */
  | "failed_precondition"
  /** Too many attempts (wrong current passwords count like failed logins; failed API key
   * exchanges from one address): wait, then try again. */
  | "rate_limited"
  /** st-peter refused the client's own API key (unknown, expired or revoked, or its
   * service account disabled): the service is misconfigured. Says nothing about the token
   * a call asked about; answer 503 (or 500), fix the key. */
  | "api_key_rejected"
  /** Any other answer from st-peter (a server fault, usually). */
  | "status";

/** Every error a call rejects with. Check `kind`, or use `instanceof InvalidTokenError` etc. */
export class StPeterError extends Error {
  readonly kind: ErrorKind;
  /** The gRPC status code st-peter (or the transport) answered. */
  readonly code: Code;
  /** st-peter's message, without the kind prefix. */
  readonly detail: string;

  constructor(kind: ErrorKind, code: Code, detail: string, options?: { cause?: unknown }) {
    super(kind === "invalid_token" ? "token is not valid" : `${describe(kind)}: ${detail}`, options);
    this.name = new.target.name;
    this.kind = kind;
    this.code = code;
    this.detail = detail;
  }
}

export class InvalidTokenError extends StPeterError {}
export class UnavailableError extends StPeterError {}
export class InvalidArgumentError extends StPeterError {}
export class NotFoundError extends StPeterError {}
export class PermissionDeniedError extends StPeterError {}
export class FailedPreconditionError extends StPeterError {}
export class RateLimitedError extends StPeterError {}
export class ApiKeyRejectedError extends StPeterError {}

function describe(kind: ErrorKind): string {
  switch (kind) {
    case "unavailable":
      return "st-peter is unavailable";
    case "invalid_argument":
      return "invalid argument";
    case "not_found":
      return "not found";
    case "permission_denied":
      return "permission denied";
    case "failed_precondition":
      return "failed precondition";
    case "rate_limited":
      return "rate limited";
    case "api_key_rejected":
      return "api key rejected";
    default:
      return "st-peter answered an error";
  }
}

export function invalidToken(detail = "token is not valid"): InvalidTokenError {
  return new InvalidTokenError("invalid_token", Code.Unauthenticated, detail);
}

/** Maps what ExchangeApiKey threw onto the error kinds: UNAUTHENTICATED is about the key,
 * never about a token (ApiKeyRejectedError, not InvalidTokenError). */
export function fromExchange(error: unknown): StPeterError {
  if (error instanceof StPeterError) {
    return error;
  }
  const connect = ConnectError.from(error);
  if (connect.code === Code.Unauthenticated) {
    return new ApiKeyRejectedError("api_key_rejected", connect.code, connect.rawMessage, { cause: error });
  }
  return fromRpc(error);
}

/** A PERMISSION_DENIED about the caller rather than the call: st-peter wants caller
 * credentials (a live service token) it did not get. */
export function callerCredentialsRefused(error: unknown): boolean {
  if (error instanceof StPeterError) {
    return error.code === Code.PermissionDenied && error.detail.startsWith(CALLER_CREDENTIALS);
  }
  const connect = ConnectError.from(error);
  return connect.code === Code.PermissionDenied && connect.rawMessage.startsWith(CALLER_CREDENTIALS);
}

/** How st-peter's message begins when it refuses the caller (not the token asked about). */
export const CALLER_CREDENTIALS = "caller credentials:";

/** Maps what a call threw onto the error kinds. */
export function fromRpc(error: unknown): StPeterError {
  if (error instanceof StPeterError) {
    return error;
  }
  const connect = ConnectError.from(error);
  const detail = connect.rawMessage;
  const options = { cause: error };
  switch (connect.code) {
    case Code.Unauthenticated:
      return new InvalidTokenError("invalid_token", connect.code, detail, options);
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return new InvalidArgumentError("invalid_argument", connect.code, detail, options);
    case Code.NotFound:
      return new NotFoundError("not_found", connect.code, detail, options);
    case Code.PermissionDenied:
      return new PermissionDeniedError("permission_denied", connect.code, detail, options);
    case Code.FailedPrecondition:
      return new FailedPreconditionError("failed_precondition", connect.code, detail, options);
    case Code.ResourceExhausted:
      return new RateLimitedError("rate_limited", connect.code, detail, options);
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return new UnavailableError("unavailable", connect.code, detail, options);
    default:
      // Connect reports a failed connection under a code of its own choosing (Aborted for
      // a reset one, Internal, Unknown) with the Node.js error as its cause; a status sent
      // by a server has no such cause.
      if (connect.cause instanceof Error && "code" in connect.cause) {
        return new UnavailableError("unavailable", Code.Unavailable, detail, options);
      }
      return new StPeterError("status", connect.code, detail, options);
  }
}
