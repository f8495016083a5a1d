/**
 * The JWT signing key and its JSON Web Key Set, as Dapr's sentry (v1.16+) keeps them beside the
 * trust bundle (`jwt.key` and `jwks.json`): generating the key Dapr generates when none exists
 * (RSA 2048, RS256), parsing the PEM forms Dapr accepts, the default key id (the standard
 * base64 of the key's SHA-256 JWK thumbprint), the JWKS document Dapr writes, and the checks
 * Dapr runs before it signs with a key: the key's public part is in the JWKS, a configured key
 * id names it, and the signing algorithm suits the key. Every refusal names the file and the
 * failed check. Pure: no files are read or written here.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, type JSONWebKeySet, type JWK } from "jose";
import { describeKey, privateKeyToPem, spkiOf } from "../x509/keys.ts";
import { decodePem } from "../x509/pem.ts";

/** The JWS algorithms Dapr's `--jwt-signing-algorithm` accepts (case-sensitive, as in Dapr). */
export const JWT_SIGNING_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
] as const;

/** One of {@link JWT_SIGNING_ALGORITHMS}. */
export type JwtSigningAlgorithm = typeof JWT_SIGNING_ALGORITHMS[number];

/** Dapr's default signing algorithm, and the one it always uses for a key it generated. */
export const DEFAULT_JWT_SIGNING_ALGORITHM: JwtSigningAlgorithm = "RS256";

/** True when `name` is one of {@link JWT_SIGNING_ALGORITHMS}. */
export function isJwtSigningAlgorithm(name: string): name is JwtSigningAlgorithm {
  return (JWT_SIGNING_ALGORITHMS as readonly string[]).includes(name);
}

/** A JWT key or JWKS failed a check; the message names the file and the check. */
export class JwtKeyError extends Error {
  override name = "JwtKeyError";
}

/** File names used in messages (they follow `--jwt-key-filename` and `--jwks-filename`). */
export interface JwtNames {
  key: string;
  jwks: string;
}

/** Dapr's default file names. */
export const DEFAULT_JWT_NAMES: JwtNames = { key: "jwt.key", jwks: "jwks.json" };

/** The curves of the ES algorithms, as node:crypto names them. */
const NAMED_CURVE_FOR: Partial<Record<JwtSigningAlgorithm, string>> = {
  ES256: "P-256",
  ES384: "P-384",
  ES512: "P-521",
};

/**
 * Generates a key for `algorithm`: by default the key Dapr generates when the store holds none,
 * RSA 2048 for RS256 (likewise for every RS and PS algorithm); ECDSA on the algorithm's curve
 * for ES256/384/512; Ed25519 for EdDSA.
 */
export function generateJwtSigningKey(
  algorithm: JwtSigningAlgorithm = DEFAULT_JWT_SIGNING_ALGORITHM,
): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (error: Error | null, _publicKey: KeyObject, privateKey: KeyObject) => {
      if (error) reject(error);
      else resolve(privateKey);
    };
    const namedCurve = NAMED_CURVE_FOR[algorithm];
    if (namedCurve) generateKeyPair("ec", { namedCurve }, done);
    else if (algorithm === "EdDSA") generateKeyPair("ed25519", {}, done);
    else generateKeyPair("rsa", { modulusLength: 2048 }, done);
  });
}

/** The DER encodings Dapr's PEM decoder maps each block label to. */
const PEM_KEY_TYPES: Record<string, "sec1" | "pkcs1" | "pkcs8"> = {
  "EC PRIVATE KEY": "sec1",
  "RSA PRIVATE KEY": "pkcs1",
  "PRIVATE KEY": "pkcs8",
};

/**
 * Parses a JWT signing key as Dapr does: the first PEM block, `EC PRIVATE KEY` (SEC 1),
 * `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY` (PKCS#8) holding an RSA, ECDSA or Ed25519 key.
 * Encrypted keys and other block labels are refused, as are PKCS#8 keys Go cannot sign with
 * (RSA-PSS, X25519, Ed448).
 */
export function parseJwtSigningKey(
  pem: string | Uint8Array,
  file: string = DEFAULT_JWT_NAMES.key,
): KeyObject {
  const [block] = decodePem(pem);
  if (!block) throw new JwtKeyError(`${file}: JWT signing key is not PEM encoded`);
  const type = PEM_KEY_TYPES[block.label];
  if (!type) {
    throw new JwtKeyError(
      `${file}: unsupported PEM block type ${JSON.stringify(block.label)} for the JWT signing ` +
        `key (use PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY, unencrypted)`,
    );
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: block.der, format: "der", type });
  } catch (error) {
    throw new JwtKeyError(
      `${file}: the ${block.label} block cannot be parsed: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const kind = key.asymmetricKeyType;
  if (kind !== "rsa" && kind !== "ec" && kind !== "ed25519") {
    throw new JwtKeyError(
      `${file}: a ${describeKey(key)} key cannot sign JWTs (use an RSA, ECDSA or Ed25519 key)`,
    );
  }
  return key;
}

/** The RFC 7638 members of a key's public JWK, exported by jose. */
async function publicJwk(key: KeyObject): Promise<JWK> {
  return await exportJWK(key.type === "private" ? createPublicKey(key) : key);
}

/**
 * The key id Dapr gives a key when none is configured: the SHA-256 JWK thumbprint (RFC 7638)
 * in standard, padded base64 (not base64url), e.g. `mK3x...Q=`.
 */
export async function defaultJwtKeyId(key: KeyObject): Promise<string> {
  const thumbprint = await calculateJwkThumbprint(await publicJwk(key), "sha256");
  return Buffer.from(thumbprint, "base64url").toString("base64");
}

/** The JWKS Dapr writes for a key, as a document and as the bytes stored in `jwks.json`. */
export interface BuiltJwks {
  jwks: JSONWebKeySet;
  /** Compact JSON with each key's members sorted by name, as Dapr's encoder writes it. */
  json: string;
}

/**
 * Builds the JWKS Dapr writes beside a key it generated: one public key with the key-type
 * members plus `kid` (the {@link defaultJwtKeyId} unless given), `alg` (RS256 unless given:
 * Dapr always writes RS256, the algorithm of the key it generates) and `use: "sig"`.
 */
export async function buildJwks(
  key: KeyObject,
  options: { keyId?: string; algorithm?: JwtSigningAlgorithm } = {},
): Promise<BuiltJwks> {
  const algorithm = options.algorithm ?? DEFAULT_JWT_SIGNING_ALGORITHM;
  checkAlgorithmForKey(key, algorithm, "the key");
  const members: JWK = {
    ...(await publicJwk(key)),
    kid: options.keyId ?? await defaultJwtKeyId(key),
    alg: algorithm,
    use: "sig",
  };
  const sorted = Object.fromEntries(Object.entries(members).sort(([a], [b]) => (a < b ? -1 : 1)));
  const jwks = { keys: [sorted as JWK] };
  return { jwks, json: JSON.stringify(jwks) };
}

/** Why `key` cannot sign with `algorithm`, or undefined when it can. */
function algorithmMismatch(key: KeyObject, algorithm: string): string | undefined {
  const kind = describeKey(key);
  if (!isJwtSigningAlgorithm(algorithm)) {
    return `unsupported signature algorithm ${JSON.stringify(algorithm)} (use one of ${
      JWT_SIGNING_ALGORITHMS.join(", ")
    })`;
  }
  if (algorithm.startsWith("RS") || algorithm.startsWith("PS")) {
    if (!kind.startsWith("rsa-")) return `${algorithm} requires an RSA key, but the key is ${kind}`;
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) return `${algorithm} requires an RSA key of at least 2048 bits, not ${bits}`;
    return undefined;
  }
  const namedCurve = NAMED_CURVE_FOR[algorithm];
  if (namedCurve) {
    const curve = `ec-${namedCurve.replace("-", "").toLowerCase()}`; // as describeKey names it
    if (!kind.startsWith("ec-")) {
      return `${algorithm} requires an ECDSA key, but the key is ${kind}`;
    }
    return kind === curve
      ? undefined
      : `${algorithm} requires a ${curve} key, but the key is ${kind}`;
  }
  return kind === "ed25519" ? undefined : `EdDSA requires an Ed25519 key, but the key is ${kind}`;
}

/**
 * Throws unless `key` can sign with `algorithm`, as Dapr checks: RS* and PS* need RSA (here
 * also at least 2048 bits, which jose requires), ES256/384/512 ECDSA on P-256/384/521, EdDSA
 * Ed25519. `file` names the key in the message.
 */
export function checkAlgorithmForKey(
  key: KeyObject,
  algorithm: string,
  file: string = DEFAULT_JWT_NAMES.key,
): void {
  const mismatch = algorithmMismatch(key, algorithm);
  if (mismatch) {
    throw new JwtKeyError(
      `${file}: JWT signing key is incompatible with algorithm ${algorithm}: ${mismatch}`,
    );
  }
}

/** One key of a JWKS, with what the checks need. */
interface JwksEntry {
  kid?: string;
  use?: string;
  /** DER SubjectPublicKeyInfo, or undefined for keys that cannot verify signatures (`oct`). */
  spki?: Buffer;
}

/** The public members of each key type; private members are ignored, as Dapr does. */
const PUBLIC_MEMBERS: Record<string, readonly string[]> = {
  RSA: ["kty", "n", "e"],
  EC: ["kty", "crv", "x", "y"],
  OKP: ["kty", "crv", "x"],
};

/** Parses one JWKS member, refusing what Dapr's JWK parser refuses. */
function parseJwksEntry(value: unknown, what: string): JwksEntry {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new JwtKeyError(`${what} is not a JSON object`);
  }
  const jwk = value as Record<string, unknown>;
  const kid = typeof jwk.kid === "string" ? jwk.kid : undefined;
  const use = typeof jwk.use === "string" ? jwk.use : undefined;
  if (jwk.kty === "oct") return { kid, use };
  const members = PUBLIC_MEMBERS[String(jwk.kty)];
  if (!members) throw new JwtKeyError(`${what} has an unsupported key type (kty) ${jwk.kty}`);
  const publicPart = Object.fromEntries(members.map((name) => [name, jwk[name]]));
  try {
    const spki = spkiOf(createPublicKey({ key: publicPart, format: "jwk" }));
    return { kid, use, spki };
  } catch (error) {
    throw new JwtKeyError(`${what} is not a valid ${jwk.kty} key: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Parses a JWKS as Dapr does: a `{"keys": [...]}` set or a single JWK, every key valid.
 * Throws when the text is not JSON, a key is malformed, or there is no key at all.
 */
function parseJwks(text: string | Uint8Array, file: string): JwksEntry[] {
  let document: unknown;
  try {
    document = JSON.parse(typeof text === "string" ? text : new TextDecoder().decode(text));
  } catch (error) {
    throw new JwtKeyError(`${file}: failed to parse JWKS: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const set = document as { keys?: unknown } | null;
  const members = set && typeof set === "object" && "keys" in set ? set.keys : [document];
  if (!Array.isArray(members)) throw new JwtKeyError(`${file}: "keys" is not an array`);
  if (members.length === 0) throw new JwtKeyError(`${file}: JWKS doesn't contain any keys`);
  return members.map((member, index) => parseJwksEntry(member, `${file}: key #${index + 1}`));
}

/** Dapr's key comparison: same public key, and not marked for a use other than `sig`. */
function entryMatches(entry: JwksEntry, spki: Buffer): boolean {
  if (entry.use !== undefined && entry.use !== "sig") return false;
  return entry.spki !== undefined && entry.spki.equals(spki);
}

/**
 * Verifies a JWKS against the signing key as Dapr does on load: the JWKS parses and holds at
 * least one key; with a configured `keyId`, a key with exactly that `kid` must exist and be the
 * signing key's public key; without one, any key must be (keys whose `use` is not `sig` never
 * match). Throws a {@link JwtKeyError} naming both files and the failed check.
 */
export function verifyJwks(
  key: KeyObject,
  jwksText: string | Uint8Array,
  options: { keyId?: string; names?: JwtNames } = {},
): void {
  const names = options.names ?? DEFAULT_JWT_NAMES;
  const entries = parseJwks(jwksText, names.jwks);
  const spki = spkiOf(key);
  const { keyId } = options;
  if (keyId === undefined) {
    if (entries.some((entry) => entryMatches(entry, spki))) return;
    throw new JwtKeyError(
      `${names.jwks} doesn't contain a matching public key for the JWT signing key ${names.key}`,
    );
  }
  const named = entries.filter((entry) => entry.kid === keyId);
  if (named.length === 0) {
    throw new JwtKeyError(
      `${names.jwks} doesn't contain a key with the configured key ID ${JSON.stringify(keyId)}`,
    );
  }
  if (!named.some((entry) => entryMatches(entry, spki))) {
    throw new JwtKeyError(
      `${names.jwks} contains a key with the configured key ID ${JSON.stringify(keyId)} but ` +
        `it is not the public key of the JWT signing key ${names.key}`,
    );
  }
}

/** A key ready to sign JWT-SVIDs with: what {@link prepareJwtSigningKey} returns. */
export interface JwtSigningKey {
  readonly privateKey: KeyObject;
  readonly algorithm: JwtSigningAlgorithm;
  /** The `kid` put in every token header. */
  readonly keyId: string;
  /**
   * True when the JWKS has a key with this `kid`. Dapr signs with the thumbprint kid when none
   * is configured even if the JWKS names the key otherwise (it logs "please ensure this aligns
   * with your JWKS"); verifiers that look keys up by kid then reject the tokens.
   */
  readonly keyIdInJwks: boolean;
  /** The JWKS to publish, as stored (the OIDC server serves it). */
  readonly jwksJson: string;
  /** When the key stops being trusted, if it has such a date; tokens never outlive it. */
  readonly notAfter?: Date;
  /**
   * During a rotation (jwt-rotation.ts): the next key, already in the JWKS, which signs from
   * `notBefore` on.
   */
  readonly next?: { readonly key: JwtSigningKey; readonly notBefore: Date };
}

/** What {@link prepareJwtSigningKey} takes: the two stored texts and the configuration. */
export interface JwtKeyMaterial {
  /** The PEM text of `jwt.key`. */
  keyPem: string | Uint8Array;
  /** The text of `jwks.json`. */
  jwksJson: string | Uint8Array;
  /** `--jwt-signing-algorithm` (Dapr's default RS256). */
  algorithm: string;
  /** `--jwt-key-id`, when set. */
  keyId?: string;
  names?: JwtNames;
}

/**
 * Loads stored key material in Dapr's order: parse the key, verify the JWKS against it (and the
 * configured kid), require an algorithm the key suits, then pick the kid: the configured one,
 * else {@link defaultJwtKeyId}.
 */
export async function prepareJwtSigningKey(material: JwtKeyMaterial): Promise<JwtSigningKey> {
  const names = material.names ?? DEFAULT_JWT_NAMES;
  const privateKey = parseJwtSigningKey(material.keyPem, names.key);
  verifyJwks(privateKey, material.jwksJson, { keyId: material.keyId, names });
  if (material.algorithm === "") throw new JwtKeyError("JWT signing algorithm required");
  checkAlgorithmForKey(privateKey, material.algorithm, names.key);
  const keyId = material.keyId ?? await defaultJwtKeyId(privateKey);
  const jwksJson = typeof material.jwksJson === "string"
    ? material.jwksJson
    : new TextDecoder().decode(material.jwksJson);
  const keyIdInJwks = parseJwks(jwksJson, names.jwks).some((entry) => entry.kid === keyId);
  return {
    privateKey,
    algorithm: material.algorithm as JwtSigningAlgorithm,
    keyId,
    keyIdInJwks,
    jwksJson,
  };
}

/** Freshly generated key material: the texts to store and the key ready to sign with. */
export interface GeneratedJwtKey {
  /** PKCS#8 `PRIVATE KEY` PEM, as Dapr stores it in `jwt.key`. */
  keyPem: string;
  /** The `jwks.json` text. */
  jwksJson: string;
  signingKey: JwtSigningKey;
}

/**
 * Generates what Dapr generates when the store holds no JWT key: an RSA 2048 key, signing with
 * RS256 whatever `--jwt-signing-algorithm` says (Dapr overrides it), and its JWKS. The kid is
 * the configured one, else {@link defaultJwtKeyId}. Unlike Dapr, a configured kid is also the
 * kid written to the JWKS: Dapr writes the thumbprint there, so its tokens name a kid the JWKS
 * lacks and its next start refuses the stored JWKS.
 */
export async function generateJwtKeyMaterial(
  options: { keyId?: string } = {},
): Promise<GeneratedJwtKey> {
  const privateKey = await generateJwtSigningKey();
  const keyId = options.keyId ?? await defaultJwtKeyId(privateKey);
  const { json } = await buildJwks(privateKey, { keyId, algorithm: DEFAULT_JWT_SIGNING_ALGORITHM });
  return {
    keyPem: privateKeyToPem(privateKey),
    jwksJson: json,
    signingKey: {
      privateKey,
      algorithm: DEFAULT_JWT_SIGNING_ALGORITHM,
      keyId,
      keyIdInJwks: true,
      jwksJson: json,
    },
  };
}
