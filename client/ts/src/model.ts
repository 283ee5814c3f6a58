import { timestampDate, durationMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  FailureReason as PbFailureReason,
  TwoFactorMethod as PbTwoFactorMethod,
  UserKind as PbUserKind,
} from "./genpb/st_peter/auth/v1/auth_pb.js";
import type {
  Authenticated as PbAuthenticated,
  LoginResponse,
  Session as PbSession,
  User as PbUser,
  VerifyTokenResponse,
} from "./genpb/st_peter/auth/v1/auth_pb.js";

/** A user as st-peter knows them. Key your own local roles on `userId`. */
export interface User {
  userId: string;
  handle: string;
  /** Lowercase; undefined when the user has none. */
  email?: string;
  /** E.164; undefined when the user has none. */
  phone?: string;
  displayName: string;
  disabled: boolean;
  /** A person, or a service account (which authenticates with an API key, has no password
   * and no account to run). */
  kind: UserKind;
}

/** `human`: a person; `service`: a service account; `unknown`: a kind this client version
 * does not know (or a server older than service accounts, which sends none). */
export type UserKind = "human" | "service" | "unknown";

/** The verified owner of a token. */
export interface VerifiedUser {
  user: User;
  /** Platform roles, sorted. */
  roles: string[];
  /** When the token stops being valid; the cache never serves the answer past this. */
  expiresAt: Date;
}

/** A logged-in session (of a person, from login; of a service account, from
 * exchangeApiKey). */
export interface Authenticated {
  kind: "authenticated";
  token: string;
  expiresAt: Date;
  user: User;
}

/** A second factor is required: send the user's code with `twoFactorId` to verifyTwoFactor. */
export interface TwoFactor {
  kind: "two_factor";
  twoFactorId: string;
  expiresAt: Date;
  methods: TwoFactorMethod[];
}

/** A login that did not succeed. */
export interface Failed {
  kind: "failed";
  reason: FailureReason;
  /** Milliseconds to wait before trying again, where the reason implies waiting. */
  retryAfterMs?: number;
}

/** The answer to login and verifyTwoFactor. A refused login is `Failed`, not an error. */
export type LoginResult = Authenticated | TwoFactor | Failed;

/** `totp`: a 6-digit code from an authenticator app; `recovery_code`: one of the one-time
 * recovery codes issued with the TOTP enrollment; `passkey`: one of the user's passkeys
 * (`Client.beginPasskeyLogin({ twoFactorId })`, then `finishPasskeyLogin`). */
export type TwoFactorMethod = "totp" | "recovery_code" | "passkey";

/** `invalid_credentials` covers wrong password, unknown identifier and disabled user alike;
 * `unknown` is a reason this client version does not know yet. */
export type FailureReason =
  | "invalid_credentials"
  | "rate_limited"
  | "invalid_code"
  | "challenge_expired"
  | "unknown";

/** One live session of a user, from `Account.listSessions`. */
export interface Session {
  /** Names the session for `Account.revokeSession` (a UUID; not a token). */
  sessionId: string;
  /** When the session was opened (the login). */
  createdAt: Date;
  /** When it ends unless revoked first. */
  expiresAt: Date;
  /** When st-peter last saw its token (accurate to a few minutes: verified answers are
   * cached); undefined when never seen since the login. */
  lastSeenAt?: Date;
  /** True for the session of the token the account handle was made with. */
  current: boolean;
}

/** The user's own account, from `Account.get`: what an account page offers depends on it. */
export interface AccountInfo {
  /** Who the token belongs to. */
  user: User;
  /** TOTP is enrolled and confirmed: logins need a second factor, and disableTotp and
   * regenerateRecoveryCodes apply (else beginTotpEnrollment does). */
  totpEnabled: boolean;
  /** Recovery codes not used yet (0 without TOTP). */
  recoveryCodesLeft: number;
  /** How many passkeys the user has registered (`Account.listPasskeys` lists them). */
  passkeys: number;
}

/** What `Account.confirmTotpEnrollment` answers: TOTP is on. */
export interface TotpConfirmation {
  /** One-time recovery codes (`xxxx-xxxx-xxxx-xxxx`), each accepted once in place of a
   * TOTP code. Shown this once: st-peter keeps only their hashes. */
  recoveryCodes: string[];
  /** How many other sessions were ended (0 unless `revokeOtherSessions`). */
  revokedSessions: number;
}

export function sessionFrom(session: PbSession): Session {
  const out: Session = {
    sessionId: session.sessionId,
    createdAt: date(session.createdAt),
    expiresAt: date(session.expiresAt),
    current: session.current,
  };
  if (session.lastSeenAt) {
    out.lastSeenAt = timestampDate(session.lastSeenAt);
  }
  return out;
}

export function date(timestamp: Timestamp | undefined): Date {
  return timestamp ? timestampDate(timestamp) : new Date(0);
}

export function userFrom(user: PbUser | undefined): User {
  return {
    userId: user?.userId ?? "",
    handle: user?.handle ?? "",
    email: user?.email || undefined,
    phone: user?.phone || undefined,
    displayName: user?.displayName ?? "",
    disabled: user?.disabled ?? false,
    kind: kindFrom(user?.kind),
  };
}

function kindFrom(kind: PbUserKind | undefined): UserKind {
  switch (kind) {
    case PbUserKind.HUMAN:
      return "human";
    case PbUserKind.SERVICE:
      return "service";
    default:
      return "unknown";
  }
}

export function authenticatedFrom(authenticated: PbAuthenticated): Authenticated {
  return {
    kind: "authenticated",
    token: authenticated.token,
    expiresAt: date(authenticated.expiresAt),
    user: userFrom(authenticated.user),
  };
}

export function verifiedFrom(response: VerifyTokenResponse): VerifiedUser {
  return {
    user: userFrom(response.user),
    roles: [...response.roles],
    expiresAt: date(response.expiresAt),
  };
}

export function loginResultFrom(response: LoginResponse): LoginResult {
  const result = response.result;
  switch (result.case) {
    case "authenticated":
      return authenticatedFrom(result.value);
    case "twoFactor":
      return {
        kind: "two_factor",
        twoFactorId: result.value.twoFactorId,
        expiresAt: date(result.value.expiresAt),
        methods: result.value.methods.flatMap((m): TwoFactorMethod[] => {
          switch (m) {
            case PbTwoFactorMethod.TOTP:
              return ["totp"];
            case PbTwoFactorMethod.RECOVERY_CODE:
              return ["recovery_code"];
            case PbTwoFactorMethod.PASSKEY:
              return ["passkey"];
            default:
              // A method this client version does not know: not offered.
              return [];
          }
        }),
      };
    case "failed": {
      const failed: Failed = { kind: "failed", reason: reasonFrom(result.value.reason) };
      if (result.value.retryAfter) {
        failed.retryAfterMs = durationMs(result.value.retryAfter);
      }
      return failed;
    }
    default:
      // An empty oneof comes only from a newer server with an outcome we cannot read:
      // fail closed.
      return { kind: "failed", reason: "unknown" };
  }
}

function reasonFrom(reason: PbFailureReason): FailureReason {
  switch (reason) {
    case PbFailureReason.INVALID_CREDENTIALS:
      return "invalid_credentials";
    case PbFailureReason.RATE_LIMITED:
      return "rate_limited";
    case PbFailureReason.INVALID_CODE:
      return "invalid_code";
    case PbFailureReason.CHALLENGE_EXPIRED:
      return "challenge_expired";
    default:
      return "unknown";
  }
}
