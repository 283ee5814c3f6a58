// Passkeys (WebAuthn): the JSON st-peter and the browser exchange, passed through as strings
// under types of their own so that options and credentials cannot be swapped, and the
// passkeys an account lists.
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { Passkey as PbPasskey } from "./genpb/st_peter/auth/v1/auth_pb.js";
import { date } from "./model.js";

declare const passkeyJson: unique symbol;

/**
 * Options for the browser, from `Client.beginPasskeyLogin` (for
 * `navigator.credentials.get`) or `Account.beginPasskeyRegistration` (for
 * `navigator.credentials.create`): JSON with the options under a `publicKey` key, binary
 * fields base64url. Send it to the page as it is; there, `JSON.parse(options).publicKey`
 * goes to `PublicKeyCredential.parseRequestOptionsFromJSON` (or
 * `parseCreationOptionsFromJSON`) where the browser has it, or has its `challenge`,
 * `user.id` and credential ids decoded from base64url. A string at run time; only
 * st-peter's answers have this type.
 */
export type PasskeyOptionsJson = string & { readonly [passkeyJson]: "options" };

/**
 * The browser's answer, the PublicKeyCredential that `navigator.credentials.create` or
 * `.get` resolved to, as JSON (what its `toJSON()` gives): for
 * `Account.finishPasskeyRegistration` and `Client.finishPasskeyLogin`. Make one with
 * `passkeyCredentialJson`. A string at run time.
 */
export type PasskeyCredentialJson = string & { readonly [passkeyJson]: "credential" };

/**
 * The browser's PublicKeyCredential as a `PasskeyCredentialJson`: a JSON string as the page
 * posted it (passed through unchanged: st-peter checks it, and answers InvalidArgumentError
 * naming `credential_json` when it is malformed), or the credential itself or its
 * `toJSON()` value (serialised with `JSON.stringify`). Throws a TypeError for anything else.
 */
export function passkeyCredentialJson(credential: string | object): PasskeyCredentialJson {
  if (typeof credential === "string") {
    return credential as PasskeyCredentialJson;
  }
  if (typeof credential === "object" && credential !== null) {
    return JSON.stringify(credential) as PasskeyCredentialJson;
  }
  throw new TypeError("passkeyCredentialJson takes the credential's JSON (a string) or the credential (an object)");
}

/** A passkey sign-in waiting for the browser, from `Client.beginPasskeyLogin`. */
export interface PasskeyLoginChallenge {
  /** Send it back with the browser's answer to `finishPasskeyLogin` (`stw_` and 43
   * characters); single-use, lives about two minutes. */
  challengeId: string;
  /** For `navigator.credentials.get`. */
  optionsJson: PasskeyOptionsJson;
}

/** Who `Client.beginPasskeyLogin` is for; at most one of the two. */
export interface PasskeyLoginOptions {
  /** The email, phone or handle of the user signing in: the options name that user's
   * passkeys. Without it (and without `twoFactorId`) the sign-in is discoverable: the
   * browser offers any passkey it keeps for the site, and the passkey tells who it is. */
  identifier?: string;
  /** The `twoFactorId` of a login that answered `{ kind: "two_factor" }` with `passkey`
   * among its methods: the assertion completes that login, no password again. */
  twoFactorId?: string;
}

/** A passkey registration waiting for the browser, from `Account.beginPasskeyRegistration`. */
export interface PasskeyRegistration {
  /** Send it back with the browser's answer to `finishPasskeyRegistration` (`stw_` and 43
   * characters); single-use, lives about five minutes. */
  registrationId: string;
  /** For `navigator.credentials.create`. */
  optionsJson: PasskeyOptionsJson;
}

/** One of the user's passkeys, from `Account.listPasskeys` or
 * `Account.finishPasskeyRegistration`. Neither its key nor its credential id leaves
 * st-peter. */
export interface Passkey {
  /** Names the passkey for `Account.removePasskey` (a UUID). */
  passkeyId: string;
  /** The name given at registration ("work laptop"). */
  name: string;
  /** When it was registered. */
  createdAt: Date;
  /** When it last signed the user in; undefined when never. */
  lastUsedAt?: Date;
}

export function passkeyFrom(passkey: PbPasskey | undefined): Passkey {
  const out: Passkey = {
    passkeyId: passkey?.passkeyId ?? "",
    name: passkey?.name ?? "",
    createdAt: date(passkey?.createdAt),
  };
  if (passkey?.lastUsedAt) {
    out.lastUsedAt = timestampDate(passkey.lastUsedAt);
  }
  return out;
}

/** st-peter's options JSON, typed. */
export function optionsJson(json: string): PasskeyOptionsJson {
  return json as PasskeyOptionsJson;
}
