// Account self-service (st-peter's AccountService): an account handle bound to one user's
// session token, made by `Client.account(token)`, on the client's own connection and with
// its deadline. Nothing here is retried: these calls change state, and the client retries
// no call.
import { inspect } from "node:util";

import type { Client as RpcClient } from "@connectrpc/connect";
import QRCode from "qrcode";

import { fromRpc } from "./errors.js";
import type { AccountService } from "./genpb/st_peter/auth/v1/auth_pb.js";
import { date, sessionFrom, userFrom, type AccountInfo, type Session, type TotpConfirmation } from "./model.js";
import {
  optionsJson,
  passkeyFrom,
  type Passkey,
  type PasskeyCredentialJson,
  type PasskeyRegistration,
} from "./passkey.js";

/** What an account handle needs of its client. Not for callers: use `Client.account`. */
export interface AccountBackend {
  readonly rpc: RpcClient<typeof AccountService>;
  readonly timeoutMs: number;
  /** Sessions of the token's user were ended: drop the cached answers of that user. */
  sessionsEnded(token: string): void;
  /** st-peter said the token is not valid: drop its cached answer. */
  tokenInvalid(token: string): void;
}

export interface RevokeOtherSessionsOption {
  /** Also end every other live session of the user (the caller's stays valid). Default false. */
  revokeOtherSessions?: boolean;
}

/**
 * The account of the user whose session token made it (`client.account(token)`): their
 * password, TOTP, passkeys and sessions. Cheap to make, one per request is fine. Every method rejects
 * with a StPeterError: InvalidTokenError when the token is not valid, PermissionDeniedError
 * for a wrong current password, RateLimitedError while too many were wrong,
 * InvalidArgumentError (a weak new password, a wrong code; the message names the field),
 * FailedPreconditionError, NotFoundError, UnavailableError.
 *
 * Calls that end sessions drop this client's cached verifyToken answers for the user (other
 * clients drop theirs when the revocation feed reports it). The token is never shown by
 * `util.inspect` or `JSON.stringify`.
 */
export class Account {
  readonly #token: string;
  readonly #backend: AccountBackend;

  /** @internal Use `Client.account(token)`. */
  constructor(token: string, backend: AccountBackend) {
    this.#token = token;
    this.#backend = backend;
  }

  /** Who the user is and which second factors they have (TOTP on or off, recovery codes
   * left). */
  async get(): Promise<AccountInfo> {
    const response = await this.#call((rpc, call) => rpc.getAccount({}, call), false);
    return {
      user: userFrom(response.user),
      totpEnabled: response.totpEnabled,
      recoveryCodesLeft: response.recoveryCodesLeft,
      passkeys: response.passkeys,
    };
  }

  /** Sets a new password, checked for length and strength (a weak one rejects with
   * InvalidArgumentError naming `new_password`). The caller's session stays valid; with
   * `revokeOtherSessions` every other one ends. Answers how many were ended. */
  async changePassword(
    currentPassword: string,
    newPassword: string,
    options: RevokeOtherSessionsOption = {},
  ): Promise<number> {
    const revoke = options.revokeOtherSessions ?? false;
    const response = await this.#call(
      (rpc, call) => rpc.changePassword({ currentPassword, newPassword, revokeOtherSessions: revoke }, call),
      revoke,
    );
    return response.revokedSessions;
  }

  /** Starts enrolling a TOTP authenticator: show the answer's QR code (or its secret), then
   * confirm with a code from the app. FailedPreconditionError when TOTP is on already. */
  async beginTotpEnrollment(): Promise<TotpEnrollment> {
    const response = await this.#call((rpc, call) => rpc.beginTotpEnrollment({}, call), false);
    return new TotpEnrollment(response.enrollmentId, response.otpauthUri, date(response.expiresAt));
  }

  /** Turns TOTP on with a code from the authenticator; answers the recovery codes (shown
   * this once). A wrong code rejects with InvalidArgumentError (`code`); an unknown,
   * expired or used enrollment with FailedPreconditionError (`enrollment_id`). */
  async confirmTotpEnrollment(
    enrollmentId: string,
    code: string,
    options: RevokeOtherSessionsOption = {},
  ): Promise<TotpConfirmation> {
    const revoke = options.revokeOtherSessions ?? false;
    const response = await this.#call(
      (rpc, call) => rpc.confirmTotpEnrollment({ enrollmentId, code, revokeOtherSessions: revoke }, call),
      revoke,
    );
    return { recoveryCodes: [...response.recoveryCodes], revokedSessions: response.revokedSessions };
  }

  /** Removes TOTP and its recovery codes. FailedPreconditionError when TOTP is not on. */
  async disableTotp(currentPassword: string): Promise<void> {
    await this.#call((rpc, call) => rpc.disableTotp({ currentPassword }, call), false);
  }

  /** Replaces the recovery codes (the old ones stop working); answers the new ones, shown
   * this once. FailedPreconditionError when TOTP is not on. */
  async regenerateRecoveryCodes(currentPassword: string): Promise<string[]> {
    const response = await this.#call((rpc, call) => rpc.regenerateRecoveryCodes({ currentPassword }, call), false);
    return [...response.recoveryCodes];
  }

  /** Starts registering a passkey: send the answer's `optionsJson` to the page for
   * `navigator.credentials.create`, then its credential to finishPasskeyRegistration with
   * the `registrationId`. Takes the current password (PermissionDeniedError when wrong).
   * FailedPreconditionError when st-peter has no WebAuthn settings (`--webauthn-rp-id`,
   * `--webauthn-origin`). */
  async beginPasskeyRegistration(currentPassword: string): Promise<PasskeyRegistration> {
    const response = await this.#call((rpc, call) => rpc.beginPasskeyRegistration({ currentPassword }, call), false);
    return { registrationId: response.registrationId, optionsJson: optionsJson(response.optionsJson) };
  }

  /** Stores the passkey the browser created under `name` (1 to 100 characters), and
   * answers it. From then on a password login asks for a second factor, which the passkey
   * can give. A credential that does not verify (wrong origin or challenge, no user
   * verification) or is malformed rejects with InvalidArgumentError naming
   * `credential_json`; an unknown, used or expired `registrationId` with
   * FailedPreconditionError. */
  async finishPasskeyRegistration(
    registrationId: string,
    credentialJson: PasskeyCredentialJson,
    name: string,
  ): Promise<Passkey> {
    const response = await this.#call(
      (rpc, call) => rpc.finishPasskeyRegistration({ registrationId, credentialJson, name }, call),
      false,
    );
    return passkeyFrom(response.passkey);
  }

  /** The user's passkeys, oldest first. */
  async listPasskeys(): Promise<Passkey[]> {
    const response = await this.#call((rpc, call) => rpc.listPasskeys({}, call), false);
    return response.passkeys.map(passkeyFrom);
  }

  /** Removes one of the user's passkeys by its `passkeyId` (from listPasskeys). Takes the
   * current password (PermissionDeniedError when wrong). NotFoundError for an unknown or
   * another user's passkey. */
  async removePasskey(passkeyId: string, currentPassword: string): Promise<void> {
    await this.#call((rpc, call) => rpc.removePasskey({ passkeyId, currentPassword }, call), false);
  }

  /** The user's live sessions, newest first; the caller's own has `current: true`. */
  async listSessions(): Promise<Session[]> {
    const response = await this.#call((rpc, call) => rpc.listSessions({}, call), false);
    return response.sessions.map(sessionFrom);
  }

  /** Ends one of the user's sessions by its `sessionId` (from listSessions); the caller's
   * own is allowed (a logout). NotFoundError for an unknown, ended or other user's session. */
  async revokeSession(sessionId: string): Promise<void> {
    await this.#call((rpc, call) => rpc.revokeSession({ sessionId }, call), true);
  }

  /** Ends every live session of the user but the caller's; answers how many. */
  async revokeOtherSessions(): Promise<number> {
    const response = await this.#call((rpc, call) => rpc.revokeOtherSessions({}, call), true);
    return response.revokedSessions;
  }

  async #call<T>(
    send: (
      rpc: RpcClient<typeof AccountService>,
      call: { timeoutMs: number; headers: Record<string, string> },
    ) => Promise<T>,
    endsSessions: boolean,
  ): Promise<T> {
    const backend = this.#backend;
    try {
      const response = await send(backend.rpc, {
        timeoutMs: backend.timeoutMs,
        headers: { authorization: `Bearer ${this.#token}` },
      });
      if (endsSessions) {
        backend.sessionsEnded(this.#token);
      }
      return response;
    } catch (error) {
      const mapped = fromRpc(error);
      if (mapped.kind === "invalid_token") {
        backend.tokenInvalid(this.#token);
      } else if (endsSessions && mapped.kind === "unavailable") {
        // The call may have ended sessions before the answer was lost.
        backend.sessionsEnded(this.#token);
      }
      throw mapped;
    }
  }

  /** @internal */
  toJSON(): Record<string, string> {
    return { token: "[redacted]" };
  }

  /** @internal */
  [inspect.custom](): string {
    return "Account { token: [redacted] }";
  }
}

/** Size and margin of a QR code image. */
export interface QrCodeOptions {
  /** Width (and height) of a PNG in pixels. Default: 4 pixels per module. */
  width?: number;
  /** Quiet zone around the code, in modules. Default 4. */
  margin?: number;
}

/**
 * A pending TOTP enrollment from `Account.beginTotpEnrollment`: show `qrCodeSvg()` or
 * `qrCodePng()` (or `secret`, for typing in by hand), then confirm with
 * `Account.confirmTotpEnrollment(enrollment.enrollmentId, code)` before `expiresAt`.
 *
 * `otpauthUri` holds the TOTP secret: never log it. `util.inspect` and `JSON.stringify` show
 * only `enrollmentId` and `expiresAt`.
 */
export class TotpEnrollment {
  /** Names the enrollment for confirmTotpEnrollment (`ste_` and 43 characters). */
  readonly enrollmentId: string;
  /** When the enrollment dies unconfirmed. */
  readonly expiresAt: Date;
  readonly #otpauthUri: string;

  /** @internal */
  constructor(enrollmentId: string, otpauthUri: string, expiresAt: Date) {
    this.enrollmentId = enrollmentId;
    this.expiresAt = expiresAt;
    this.#otpauthUri = otpauthUri;
  }

  /** `otpauth://totp/...`, the secret included: what the QR code encodes. Never log it. */
  get otpauthUri(): string {
    return this.#otpauthUri;
  }

  /** The base32 secret of the URI, for typing into an authenticator by hand. */
  get secret(): string {
    return new URL(this.#otpauthUri).searchParams.get("secret") ?? "";
  }

  /** The otpauth URI as a QR code, an `<svg>` element (scalable; size it with CSS). */
  qrCodeSvg(options: Pick<QrCodeOptions, "margin"> = {}): Promise<string> {
    return QRCode.toString(this.#otpauthUri, { type: "svg", errorCorrectionLevel: "M", margin: options.margin ?? 4 });
  }

  /** The otpauth URI as a QR code, a PNG image. */
  async qrCodePng(options: QrCodeOptions = {}): Promise<Uint8Array> {
    const png: Uint8Array = await QRCode.toBuffer(this.#otpauthUri, {
      type: "png",
      errorCorrectionLevel: "M",
      margin: options.margin ?? 4,
      ...(options.width === undefined ? {} : { width: options.width }),
    });
    return png;
  }

  /** @internal */
  toJSON(): { enrollmentId: string; expiresAt: string } {
    return { enrollmentId: this.enrollmentId, expiresAt: this.expiresAt.toISOString() };
  }

  /** @internal */
  [inspect.custom](): string {
    return `TotpEnrollment { enrollmentId: ${JSON.stringify(this.enrollmentId)}, expiresAt: ${this.expiresAt.toISOString()}, otpauthUri: [redacted] }`;
  }
}
