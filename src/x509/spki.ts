/**
 * Structural checks of a SubjectPublicKeyInfo from an untrusted source (a CSR), done before any
 * cryptographic work, and its canonical re-encoding. The rules are Go's (crypto/x509
 * parsePublicKey and crypto/rsa's public key check), so that a key we certify is one daprd can
 * parse and use, plus two bounds of ours: RSA moduli of at most 8192 bits (what Go's TLS stack
 * accepts from a peer) and only named curves.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import * as der from "./der.ts";

/** Why a public key was refused: malformed (Go would not parse it) or outside the policy. */
export class SpkiError extends Error {
  override name = "SpkiError";
  /** `malformed`: not a well-formed key; `unsupported`: well-formed, but refused. */
  constructor(
    readonly kind: "malformed" | "unsupported",
    readonly keyType: string,
    message: string,
  ) {
    super(message);
  }
}

/** A checked public key. */
export interface CheckedSpki {
  /** `rsa`, `ec` or `ed25519`. */
  family: "rsa" | "ec" | "ed25519";
  /** Short description as {@link describeKey} gives it: `ec-p256`, `rsa-2048`, `ed25519`. */
  keyType: string;
  /** The SPKI re-encoded canonically (DER, uncompressed point, NULL RSA parameters). */
  canonical: Buffer;
}

const OID_RSA = "1.2.840.113549.1.1.1";
const OID_EC = "1.2.840.10045.2.1";
const OID_ED25519 = "1.3.101.112";

/** Named curves Go parses that sentry knows, by OID: name and coordinate size. */
const CURVES: Record<string, { name: string; size: number }> = {
  "1.2.840.10045.3.1.7": { name: "ec-p256", size: 32 },
  "1.3.132.0.34": { name: "ec-p384", size: 48 },
  "1.3.132.0.35": { name: "ec-p521", size: 66 },
};

/** Names for key algorithms sentry never accepts, for the refusal message. */
const OTHER_ALGORITHMS: Record<string, string> = {
  "1.2.840.10040.4.1": "dsa",
  "1.3.101.110": "x25519",
  "1.3.101.111": "x448",
  "1.3.101.113": "ed448",
  "1.2.840.113549.1.1.10": "rsa-pss",
};

/** Largest RSA modulus accepted, in bits (Go's TLS client and server refuse larger). */
export const MAX_RSA_BITS = 8192;
/** Largest RSA public exponent Go's crypto/rsa accepts. */
export const MAX_RSA_EXPONENT = 2 ** 31 - 1;

const RSA_ALGORITHM = der.sequence(der.oid(OID_RSA), der.NULL);

function malformed(message: string, keyType = "unknown"): SpkiError {
  return new SpkiError("malformed", keyType, message);
}

function bitLength(magnitude: Uint8Array): number {
  let start = 0;
  while (start < magnitude.length && magnitude[start] === 0) start++;
  if (start === magnitude.length) return 0;
  return (magnitude.length - start - 1) * 8 + (32 - Math.clz32(magnitude[start]));
}

/** The key bits of the BIT STRING (no unused bits allowed). */
function keyBits(spki: Uint8Array, bits: der.Element): Uint8Array {
  const content = der.contentOf(spki, bits);
  if (content.length < 1 || content[0] !== 0) throw malformed("public key has unused bits");
  return content.subarray(1);
}

function checkRsa(parameters: Uint8Array | undefined, key: Uint8Array): CheckedSpki {
  if (!parameters || !der.NULL.equals(parameters)) {
    throw malformed("RSA key missing NULL parameters", "rsa");
  }
  const root = der.readElement(key, 0, key.length, true);
  if (root.tag !== der.Tag.SEQUENCE) throw malformed("invalid RSA public key", "rsa");
  if (root.end !== key.length) throw malformed("trailing data after the RSA public key", "rsa");
  const [n, e, ...rest] = der.children(key, root, true);
  if (!n || !e || rest.length > 0 || n.tag !== der.Tag.INTEGER || e.tag !== der.Tag.INTEGER) {
    throw malformed("invalid RSA public key", "rsa");
  }
  const modulus = der.contentOf(key, n);
  const exponent = der.contentOf(key, e);
  der.checkMinimalInteger(modulus);
  der.checkMinimalInteger(exponent);
  if (modulus[0] & 0x80 || bitLength(modulus) === 0) {
    throw malformed("RSA modulus is not a positive number", "rsa");
  }
  if (exponent[0] & 0x80 || bitLength(exponent) === 0) {
    throw malformed("RSA public exponent is not a positive number", "rsa");
  }
  const bits = bitLength(modulus);
  const keyType = `rsa-${bits}`;
  if (bits > MAX_RSA_BITS) {
    throw new SpkiError("unsupported", keyType, `RSA modulus over ${MAX_RSA_BITS} bits`);
  }
  if (!(modulus[modulus.length - 1] & 1)) {
    throw new SpkiError("unsupported", keyType, "RSA modulus is even");
  }
  // Length first: a 3,071-bit exponent is refused without converting it.
  const value = exponent.length > 5 ? Infinity : exponent.reduce((v, byte) => v * 256 + byte, 0);
  if (value < 3 || value > MAX_RSA_EXPONENT || value % 2 === 0) {
    throw new SpkiError(
      "unsupported",
      keyType,
      `RSA public exponent must be odd, at least 3 and at most 2^31-1 (65537 is usual); ` +
        `this one has ${bitLength(exponent)} bits`,
    );
  }
  return {
    family: "rsa",
    keyType,
    canonical: der.sequence(
      RSA_ALGORITHM,
      der.bitString(der.sequence(der.unsignedInteger(modulus), der.unsignedInteger(exponent))),
    ),
  };
}

function checkEc(parameters: Uint8Array | undefined, point: Uint8Array): CheckedSpki {
  if (!parameters) throw malformed("ECDSA key without a named curve", "ec");
  if (parameters[0] === der.Tag.SEQUENCE) {
    throw malformed("explicit EC curve parameters are not accepted (use a named curve)", "ec");
  }
  if (parameters[0] !== der.Tag.OID) throw malformed("invalid ECDSA parameters", "ec");
  const curveOid = der.decodeOid(der.contentOf(parameters, der.readElement(parameters)));
  const curve = CURVES[curveOid];
  if (!curve) throw new SpkiError("unsupported", `ec-${curveOid}`, "unknown elliptic curve");
  if (point.length !== 1 + 2 * curve.size || point[0] !== 4) {
    throw malformed("EC point is not in uncompressed form", curve.name);
  }
  return {
    family: "ec",
    keyType: curve.name,
    canonical: der.sequence(
      der.sequence(der.oid(OID_EC), der.oid(curveOid)),
      der.bitString(point),
    ),
  };
}

function checkEd25519(parameters: Uint8Array | undefined, key: Uint8Array): CheckedSpki {
  if (parameters) throw malformed("Ed25519 key encoded with illegal parameters", "ed25519");
  if (key.length !== 32) throw malformed("wrong Ed25519 public key size", "ed25519");
  return {
    family: "ed25519",
    keyType: "ed25519",
    canonical: der.sequence(der.sequence(der.oid(OID_ED25519)), der.bitString(key)),
  };
}

/**
 * Checks the SubjectPublicKeyInfo `spki` (exactly one DER element) without any cryptography:
 * strict DER, the algorithm identifier's parameters, RSA modulus and exponent bounds, named
 * curves and uncompressed points. Returns the key family, its description and the canonical
 * encoding; throws {@link SpkiError} otherwise. The key itself (a point on the curve, ...) is
 * validated later, when it is imported.
 */
export function checkSpki(spki: Uint8Array): CheckedSpki {
  let algorithmOid: string;
  let parameters: Uint8Array | undefined;
  let key: Uint8Array;
  try {
    der.checkStrictDer(spki);
    const root = der.readElement(spki);
    const [algorithm, bits, ...rest] = der.children(spki, root);
    if (algorithm?.tag !== der.Tag.SEQUENCE || bits?.tag !== der.Tag.BIT_STRING || rest.length) {
      throw malformed("malformed subjectPublicKeyInfo");
    }
    const [oid, params, ...more] = der.children(spki, algorithm);
    if (oid?.tag !== der.Tag.OID || more.length) throw malformed("malformed key algorithm");
    algorithmOid = der.decodeOid(der.contentOf(spki, oid));
    parameters = params ? der.bytesOf(spki, params) : undefined;
    key = keyBits(spki, bits);
  } catch (error) {
    if (error instanceof SpkiError) throw error;
    throw malformed((error as Error).message);
  }
  try {
    if (algorithmOid === OID_RSA) return checkRsa(parameters, key);
    if (algorithmOid === OID_EC) return checkEc(parameters, key);
    if (algorithmOid === OID_ED25519) return checkEd25519(parameters, key);
  } catch (error) {
    if (error instanceof SpkiError) throw error;
    throw malformed((error as Error).message);
  }
  const name = OTHER_ALGORITHMS[algorithmOid] ?? algorithmOid;
  throw new SpkiError("unsupported", name, `unsupported key algorithm ${name}`);
}
