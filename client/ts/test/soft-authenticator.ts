// A software WebAuthn authenticator with the browser's part in front of it, for the tests:
// it takes the options JSON st-peter hands out ({"publicKey": {...}}, binary fields
// base64url) and answers what a browser's PublicKeyCredential.toJSON() gives, as a platform
// passkey would: P-256 keys (ES256), "none" attestation, a zero AAGUID, every credential
// discoverable (it keeps the user handle), a signature counter that counts up from 0.
//
// Made of node:crypto and the few CBOR items an attestation needs (unsigned and negative
// integers, byte and text strings, maps), written here: no npm package does this and is
// kept up. It reads the options as plain JSON, so the tests also check the field names a
// browser reads. Knobs for negative tests: `userVerifying = false` (answers without the UV
// flag), any origin, and clone() (a cloned authenticator: the same keys, each copy
// counting on its own from then on).
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";

import { passkeyCredentialJson, type PasskeyCredentialJson, type PasskeyOptionsJson } from "../src/index.js";

const ES256 = -7;
const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_AT = 0x40;

type Cbor = number | string | Uint8Array | Map<Cbor, Cbor>;

/** The head of a CBOR item: major type and length (or value), shortest form. */
function head(major: number, n: number): Buffer {
  if (n < 24) {
    return Buffer.from([(major << 5) | n]);
  }
  if (n < 0x100) {
    return Buffer.from([(major << 5) | 24, n]);
  }
  if (n < 0x10000) {
    const out = Buffer.alloc(3);
    out[0] = (major << 5) | 25;
    out.writeUInt16BE(n, 1);
    return out;
  }
  const out = Buffer.alloc(5);
  out[0] = (major << 5) | 26;
  out.writeUInt32BE(n, 1);
  return out;
}

function cbor(value: Cbor): Buffer {
  if (typeof value === "number") {
    return value >= 0 ? head(0, value) : head(1, -1 - value);
  }
  if (typeof value === "string") {
    const text = Buffer.from(value, "utf8");
    return Buffer.concat([head(3, text.length), text]);
  }
  if (value instanceof Uint8Array) {
    return Buffer.concat([head(2, value.length), value]);
  }
  const parts = [head(5, value.size)];
  for (const [key, item] of value) {
    parts.push(cbor(key), cbor(item));
  }
  return Buffer.concat(parts);
}

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64url");
const sha256 = (bytes: Uint8Array | string): Buffer => createHash("sha256").update(bytes).digest();

interface Credential {
  id: Buffer;
  rpId: string;
  userHandle: Buffer;
  key: KeyObject;
  counter: number;
}

interface Descriptor {
  type: string;
  id: string;
}

/** `JSON.parse(options).publicKey`, as the page reads it. */
function publicKeyOf(options: PasskeyOptionsJson): Record<string, unknown> {
  const parsed = JSON.parse(options) as { publicKey?: Record<string, unknown> };
  if (!parsed.publicKey) {
    throw new TypeError(`options have no publicKey: ${options}`);
  }
  return parsed.publicKey;
}

function bytesField(value: unknown, what: string): Buffer {
  if (typeof value !== "string" || !/^[A-Za-z0-9_-]*$/.test(value)) {
    throw new TypeError(`${what} is not a base64url string: ${JSON.stringify(value)}`);
  }
  return Buffer.from(value, "base64url");
}

function descriptorIds(list: unknown, what: string): Buffer[] {
  if (list === undefined) {
    return [];
  }
  if (!Array.isArray(list)) {
    throw new TypeError(`${what} is not a list`);
  }
  return (list as Descriptor[]).map((d) => {
    if (d.type !== "public-key") {
      throw new TypeError(`${what} entry of type ${d.type}`);
    }
    return bytesField(d.id, `${what}[].id`);
  });
}

/** The browser's checks: a secure context, and an RP ID that is the origin's host or a
 * parent domain of it. */
function checkRpId(rpId: string, origin: string): void {
  const url = new URL(origin);
  const localhost = url.hostname === "localhost" || url.hostname.endsWith(".localhost");
  if (url.protocol !== "https:" && !(url.protocol === "http:" && localhost)) {
    throw new Error(`SecurityError: ${origin} is not a secure context`);
  }
  if (url.hostname !== rpId && !url.hostname.endsWith(`.${rpId}`)) {
    throw new Error(`SecurityError: the RP ID ${rpId} is not ${url.hostname} or a parent of it`);
  }
}

function clientData(type: string, challenge: Buffer, origin: string): Buffer {
  return Buffer.from(JSON.stringify({ type, challenge: b64url(challenge), origin, crossOrigin: false }));
}

export class SoftAuthenticator {
  /** False: answers carry user presence but not the UV flag, whatever the options ask (a
   * real authenticator would refuse; this one lets the server's check be tested). */
  userVerifying = true;
  #credentials: Credential[] = [];

  /** The ids (base64url) of the credentials held, oldest first. */
  get credentialIds(): string[] {
    return this.#credentials.map((c) => b64url(c.id));
  }

  /** A copy with the same keys; each counts its signatures on its own from now on. */
  clone(): SoftAuthenticator {
    const copy = new SoftAuthenticator();
    copy.userVerifying = this.userVerifying;
    copy.#credentials = this.#credentials.map((c) => ({ ...c }));
    return copy;
  }

  /** `navigator.credentials.create({ publicKey })` on a page of `origin`: makes a
   * discoverable credential and answers the attestation as `toJSON()` gives it. */
  create(options: PasskeyOptionsJson, origin: string): PasskeyCredentialJson {
    const publicKey = publicKeyOf(options);
    const rp = publicKey.rp as { id?: string } | undefined;
    const rpId = rp?.id ?? new URL(origin).hostname;
    checkRpId(rpId, origin);
    const challenge = bytesField(publicKey.challenge, "challenge");
    const user = publicKey.user as { id?: unknown } | undefined;
    const userHandle = bytesField(user?.id, "user.id");
    if (userHandle.length < 1 || userHandle.length > 64) {
      throw new TypeError(`user.id must be 1 to 64 bytes, not ${userHandle.length}`);
    }
    const params = (publicKey.pubKeyCredParams ?? []) as { type: string; alg: number }[];
    if (!params.some((p) => p.type === "public-key" && p.alg === ES256)) {
      throw new Error("NotSupportedError: pubKeyCredParams do not offer ES256");
    }
    for (const excluded of descriptorIds(publicKey.excludeCredentials, "excludeCredentials")) {
      if (this.#credentials.some((c) => c.rpId === rpId && c.id.equals(excluded))) {
        throw new Error("InvalidStateError: this authenticator already holds an excluded credential");
      }
    }

    const { privateKey, publicKey: publicKeyObject } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKeyObject.export({ format: "jwk" });
    const coseKey = new Map<Cbor, Cbor>([
      [1, 2], // kty: EC2
      [3, ES256], // alg
      [-1, 1], // crv: P-256
      [-2, Buffer.from(jwk.x!, "base64url")],
      [-3, Buffer.from(jwk.y!, "base64url")],
    ]);
    const id = randomBytes(32);
    const idLength = Buffer.alloc(2);
    idLength.writeUInt16BE(id.length);
    const authData = Buffer.concat([
      this.#authDataHead(rpId, FLAG_AT, 0),
      Buffer.alloc(16), // AAGUID
      idLength,
      id,
      cbor(coseKey),
    ]);
    const attestationObject = cbor(
      new Map<Cbor, Cbor>([
        ["fmt", "none"],
        ["attStmt", new Map()],
        ["authData", authData],
      ]),
    );
    this.#credentials.push({ id, rpId, userHandle, key: privateKey, counter: 0 });
    return passkeyCredentialJson({
      id: b64url(id),
      rawId: b64url(id),
      type: "public-key",
      authenticatorAttachment: "platform",
      response: {
        clientDataJSON: b64url(clientData("webauthn.create", challenge, origin)),
        attestationObject: b64url(attestationObject),
        authenticatorData: b64url(authData),
        transports: ["internal", "hybrid"],
        publicKey: b64url(publicKeyObject.export({ format: "der", type: "spki" })),
        publicKeyAlgorithm: ES256,
      },
      clientExtensionResults: {},
    });
  }

  /** `navigator.credentials.get({ publicKey })` on a page of `origin`: with
   * `allowCredentials`, one of those; with none, the newest discoverable credential for the
   * RP ID. Counts the signature counter up by one and answers the assertion (with the user
   * handle) as `toJSON()` gives it. */
  get(options: PasskeyOptionsJson, origin: string): PasskeyCredentialJson {
    const publicKey = publicKeyOf(options);
    const rpId = typeof publicKey.rpId === "string" ? publicKey.rpId : new URL(origin).hostname;
    checkRpId(rpId, origin);
    const challenge = bytesField(publicKey.challenge, "challenge");
    const allowed = descriptorIds(publicKey.allowCredentials, "allowCredentials");
    const credential = [...this.#credentials]
      .reverse()
      .find((c) => c.rpId === rpId && (allowed.length === 0 || allowed.some((id) => id.equals(c.id))));
    if (!credential) {
      throw new Error(`NotAllowedError: no credential for ${rpId} here`);
    }
    credential.counter += 1;
    const authData = this.#authDataHead(rpId, 0, credential.counter);
    const data = clientData("webauthn.get", challenge, origin);
    const signature = sign("sha256", Buffer.concat([authData, sha256(data)]), credential.key);
    return passkeyCredentialJson({
      id: b64url(credential.id),
      rawId: b64url(credential.id),
      type: "public-key",
      authenticatorAttachment: "platform",
      response: {
        clientDataJSON: b64url(data),
        authenticatorData: b64url(authData),
        signature: b64url(signature),
        userHandle: b64url(credential.userHandle),
      },
      clientExtensionResults: {},
    });
  }

  /** rpIdHash, flags (UP, UV unless switched off, and `extra`), signature counter. */
  #authDataHead(rpId: string, extra: number, counter: number): Buffer {
    const flags = FLAG_UP | extra | (this.userVerifying ? FLAG_UV : 0);
    const counterBytes = Buffer.alloc(4);
    counterBytes.writeUInt32BE(counter);
    return Buffer.concat([sha256(rpId), Buffer.from([flags]), counterBytes]);
  }
}
