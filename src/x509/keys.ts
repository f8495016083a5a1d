/**
 * Keys and signature algorithms: generating CA keys, describing public keys, signing with a
 * CA key and verifying signatures by X.509 algorithm identifier. Everything runs on
 * `node:crypto` KeyObjects, which are fast on Node and available on Deno.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as cryptoSign,
  verify as cryptoVerify,
} from "node:crypto";
import process from "node:process";
import * as der from "./der.ts";
import { decodePem, PEM_PRIVATE_KEY, pemProblem } from "./pem.ts";

/** Key algorithms sentry can generate for a CA. */
export type CaKeyAlgorithm = "ecdsa-p256" | "ed25519";

/** The CA key algorithms, for flag validation and help texts. */
export const CA_KEY_ALGORITHMS: readonly CaKeyAlgorithm[] = ["ecdsa-p256", "ed25519"];

/** A short human name for a public key: `ec-p256`, `ec-p384`, `ed25519`, `rsa-2048`, ... */
export function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec": {
      const curve = details.namedCurve;
      if (curve === "prime256v1" || curve === "P-256") return "ec-p256";
      if (curve === "secp384r1" || curve === "P-384") return "ec-p384";
      if (curve === "secp521r1" || curve === "P-521") return "ec-p521";
      return `ec-${curve ?? "unknown"}`;
    }
    case "rsa":
      return `rsa-${details.modulusLength ?? 0}`;
    default:
      return String(key.asymmetricKeyType);
  }
}

/** Generates a CA key pair. */
export function generateCaKey(algorithm: CaKeyAlgorithm): KeyObject {
  if (algorithm === "ed25519") return generateKeyPairSync("ed25519").privateKey;
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
}

/** A private key that cannot be loaded; the message says why in plain words (no OpenSSL codes). */
export class KeyFormatError extends Error {
  override name = "KeyFormatError";
}

/**
 * Loads a private key from PEM: PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, PKCS#1
 * `RSA PRIVATE KEY`. Anything else (another block, an encrypted key, DER, a damaged block)
 * throws a {@link KeyFormatError} saying what is wrong, without the file name.
 */
export function loadPrivateKey(pem: string | Uint8Array): KeyObject {
  const problem = pemProblem(pem, PEM_PRIVATE_KEY);
  if (problem) throw new KeyFormatError(problem);
  try {
    return createPrivateKey({ key: Buffer.from(pem), format: "pem" });
  } catch (error) {
    const [block] = decodePem(pem);
    throw new KeyFormatError(
      `the ${block.label} block is damaged or truncated: it does not decode to a private key`,
      { cause: error },
    );
  }
}

/** The private key as PKCS#8 PEM (how sentry stores keys it generates, like Dapr). */
export function privateKeyToPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

const CURVES_BY_OID: Record<string, { crv: string; size: number }> = {
  "1.2.840.10045.3.1.7": { crv: "P-256", size: 32 },
  "1.3.132.0.34": { crv: "P-384", size: 48 },
};

/**
 * The JWK form of an Ed25519 SPKI or (with `ec`) of an EC one with an uncompressed point;
 * undefined for other keys.
 */
function spkiToJwk(spki: Uint8Array, ec: boolean): Record<string, string> | undefined {
  const root = der.expectElement(spki, der.Tag.SEQUENCE);
  const [algorithm, bits] = der.children(spki, root);
  if (!algorithm || bits?.tag !== der.Tag.BIT_STRING) return undefined;
  const [algorithmOid, parameters] = der.children(spki, algorithm);
  const key = der.contentOf(spki, bits);
  if (key[0] !== 0) return undefined;
  const point = key.subarray(1);
  const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");
  const oid = der.decodeOid(der.contentOf(spki, algorithmOid));
  if (oid === "1.3.101.112" && point.length === 32) {
    return { kty: "OKP", crv: "Ed25519", x: b64(point) };
  }
  if (!ec || oid !== "1.2.840.10045.2.1" || parameters?.tag !== der.Tag.OID) return undefined;
  const curve = CURVES_BY_OID[der.decodeOid(der.contentOf(spki, parameters))];
  if (!curve || point.length !== 1 + 2 * curve.size || point[0] !== 4) return undefined;
  return {
    kty: "EC",
    crv: curve.crv,
    x: b64(point.subarray(1, 1 + curve.size)),
    y: b64(point.subarray(1 + curve.size)),
  };
}

/**
 * Whether this runtime's OpenSSL imports EC keys faster from DER than from JWK. Measured with
 * P-256 keys: OpenSSL 3.0 (Node 20) DER 140 µs, JWK 77 µs; OpenSSL 3.5 (Node 22, 24) DER
 * 20-21 µs, JWK 20-29 µs. Ed25519 keys are faster as JWK on all of them (4 against 9 µs).
 */
const EC_FASTER_AS_DER = (() => {
  const [major, minor] = (process.versions.openssl ?? "0.0").split(".").map(Number);
  return major > 3 || (major === 3 && minor >= 5);
})();

/**
 * Imports a DER SubjectPublicKeyInfo (the CSR hot path) by whichever form this runtime's
 * node:crypto imports fastest: Ed25519 keys, and EC keys before OpenSSL 3.5, through their
 * JWK form; everything else, and shapes the JWK path does not know, as DER. Either way
 * OpenSSL validates the key (an EC point off its curve is refused).
 */
export function publicKeyFromSpki(spki: Uint8Array): KeyObject {
  let jwk: Record<string, string> | undefined;
  try {
    jwk = spkiToJwk(spki, !EC_FASTER_AS_DER);
  } catch {
    jwk = undefined; // malformed: let the DER import report it
  }
  if (jwk) return createPublicKey({ key: jwk, format: "jwk" });
  return createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
}

/** DER SubjectPublicKeyInfo of a public or private key. */
export function spkiOf(key: KeyObject): Buffer {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  return publicKey.export({ type: "spki", format: "der" }) as Buffer;
}

/**
 * Subject key identifier of an SPKI (RFC 5280 §4.2.1.2 method 1: SHA-1 of the
 * subjectPublicKey bits), as Go's crypto/x509 computes it.
 */
export function keyIdentifier(spki: Uint8Array): Buffer {
  const root = der.expectElement(spki, der.Tag.SEQUENCE);
  const [, bits] = der.children(spki, root);
  const content = der.contentOf(spki, bits).subarray(1);
  return createHash("sha1").update(content).digest();
}

interface SignatureAlgorithm {
  /** Hash passed to node:crypto (null for Ed25519). */
  hash: string | null;
  /** Encoded AlgorithmIdentifier. */
  identifier: Buffer;
}

/** The key family a signature algorithm needs. */
export type KeyFamily = "ec" | "ed25519" | "rsa";

const ALGORITHMS_BY_OID: Record<
  string,
  { hash: string | null; name: string; family: KeyFamily }
> = {
  "1.2.840.10045.4.3.2": { hash: "sha256", name: "ecdsa-with-SHA256", family: "ec" },
  "1.2.840.10045.4.3.3": { hash: "sha384", name: "ecdsa-with-SHA384", family: "ec" },
  "1.2.840.10045.4.3.4": { hash: "sha512", name: "ecdsa-with-SHA512", family: "ec" },
  "1.3.101.112": { hash: null, name: "Ed25519", family: "ed25519" },
  "1.2.840.113549.1.1.11": { hash: "sha256", name: "sha256WithRSAEncryption", family: "rsa" },
  "1.2.840.113549.1.1.12": { hash: "sha384", name: "sha384WithRSAEncryption", family: "rsa" },
  "1.2.840.113549.1.1.13": { hash: "sha512", name: "sha512WithRSAEncryption", family: "rsa" },
};

/** The signature algorithm a CA key signs with: it follows the key, as in Dapr. */
function signatureAlgorithmFor(key: KeyObject): SignatureAlgorithm {
  const kind = describeKey(key);
  if (kind === "ed25519") return { hash: null, identifier: der.sequence(der.oid("1.3.101.112")) };
  if (kind === "ec-p256") {
    return { hash: "sha256", identifier: der.sequence(der.oid("1.2.840.10045.4.3.2")) };
  }
  if (kind === "ec-p384") {
    return { hash: "sha384", identifier: der.sequence(der.oid("1.2.840.10045.4.3.3")) };
  }
  if (kind === "ec-p521") {
    return { hash: "sha512", identifier: der.sequence(der.oid("1.2.840.10045.4.3.4")) };
  }
  if (kind.startsWith("rsa-")) {
    return {
      hash: "sha256",
      identifier: der.sequence(der.oid("1.2.840.113549.1.1.11"), der.NULL),
    };
  }
  throw new Error(`unsupported CA key type ${kind}`);
}

/** A private key ready to sign certificates: its algorithm identifier is computed once. */
export class SigningKey {
  /** The AlgorithmIdentifier placed in certificates signed by this key. */
  readonly algorithmIdentifier: Buffer;
  /** The DER SubjectPublicKeyInfo of the public half. */
  readonly spki: Buffer;
  readonly #hash: string | null;

  /** Wraps a private KeyObject. */
  constructor(readonly privateKey: KeyObject) {
    const algorithm = signatureAlgorithmFor(privateKey);
    this.algorithmIdentifier = algorithm.identifier;
    this.#hash = algorithm.hash;
    this.spki = spkiOf(privateKey);
  }

  /** Signs `data` (a TBSCertificate) and returns the raw signature value. */
  sign(data: Uint8Array): Buffer {
    return cryptoSign(this.#hash, data, this.privateKey);
  }

  /**
   * The same as {@link sign}, run on node:crypto's thread pool so that the event loop stays
   * free for other requests while OpenSSL works.
   */
  signAsync(data: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      cryptoSign(this.#hash, data, this.privateKey, (error, signature) => {
        if (error) reject(error);
        else resolve(signature);
      });
    });
  }
}

/** The name of a signature algorithm OID, or undefined when sentry does not accept it. */
export function signatureAlgorithmName(algorithmOid: string): string | undefined {
  return ALGORITHMS_BY_OID[algorithmOid]?.name;
}

/** The key family an accepted signature algorithm OID needs, or undefined. */
export function signatureAlgorithmKeyFamily(algorithmOid: string): KeyFamily | undefined {
  return ALGORITHMS_BY_OID[algorithmOid]?.family;
}

/**
 * Verifies `signature` over `data` with `publicKey`, using the algorithm named by an X.509
 * signature AlgorithmIdentifier OID. Returns false for unknown algorithms and bad signatures.
 */
export function verifySignature(
  algorithmOid: string,
  publicKey: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const algorithm = ALGORITHMS_BY_OID[algorithmOid];
  if (!algorithm) return false;
  try {
    return cryptoVerify(algorithm.hash, data, publicKey, signature);
  } catch {
    return false;
  }
}

/**
 * The same as {@link verifySignature}, run on node:crypto's thread pool (the event loop only
 * hands the job over).
 */
export function verifySignatureAsync(
  algorithmOid: string,
  publicKey: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  const algorithm = ALGORITHMS_BY_OID[algorithmOid];
  if (!algorithm) return Promise.resolve(false);
  return new Promise((resolve) => {
    try {
      cryptoVerify(algorithm.hash, data, publicKey, signature, (error, valid) => {
        resolve(!error && valid);
      });
    } catch {
      resolve(false);
    }
  });
}
