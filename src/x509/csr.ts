/**
 * PKCS#10 certificate signing requests: decode the first PEM block, check the proof of
 * possession (the request's self-signature) and return the public key. As in Dapr, only the
 * public key matters: subject, SANs, extensions and attributes in the request are ignored.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { KeyObject } from "node:crypto";
import * as der from "./der.ts";
import {
  publicKeyFromSpki,
  signatureAlgorithmKeyFamily,
  signatureAlgorithmName,
  verifySignature,
  verifySignatureAsync,
} from "./keys.ts";
import { decodePem } from "./pem.ts";
import { type CheckedSpki, checkSpki, MAX_RSA_BITS, SpkiError } from "./spki.ts";

/** Why a CSR was refused; `message` is safe to return to the caller. */
export class CsrError extends Error {
  override name = "CsrError";
}

/** The useful content of a verified CSR. */
export interface VerifiedCsr {
  /** DER SubjectPublicKeyInfo of the request's key, in its canonical encoding. */
  subjectPublicKeyInfo: Buffer;
  publicKey: KeyObject;
  /** Short key description, e.g. `ec-p256`. */
  keyType: string;
}

/** Key types a workload may hold: ECDSA P-256/P-384, Ed25519, RSA of 2048 to 8192 bits. */
function checkAcceptedKey(keyType: string, reason?: string): void {
  if (!reason) {
    if (keyType === "ec-p256" || keyType === "ec-p384" || keyType === "ed25519") return;
    const rsa = /^rsa-(\d+)$/.exec(keyType);
    if (rsa && Number(rsa[1]) >= 2048 && Number(rsa[1]) <= MAX_RSA_BITS) return;
  }
  throw new CsrError(
    `unsupported public key ${keyType} in certificate signing request: ` +
      (reason ? `${reason}; ` : "") +
      `use ECDSA P-256/P-384, Ed25519 or RSA of 2048 to ${MAX_RSA_BITS} bits`,
  );
}

interface CsrStructure {
  info: Uint8Array;
  spki: Buffer;
  algorithmOid: string;
  /** The signature AlgorithmIdentifier's parameters, encoded, if any. */
  algorithmParameters?: Uint8Array;
  signature: Uint8Array;
}

function parseStructure(bytes: Uint8Array): CsrStructure {
  // Strict DER throughout, as Go's encoding/asn1 parses a request: minimal lengths and
  // INTEGERs, nothing after the request or after the last child of any constructed element.
  der.checkStrictDer(bytes);
  const root = der.expectElement(bytes, der.Tag.SEQUENCE);
  const [info, algorithm, signature, ...rest] = der.children(bytes, root);
  if (!info || !algorithm || !signature || rest.length > 0) {
    throw new der.DerError("a request has exactly three parts");
  }
  if (info.tag !== der.Tag.SEQUENCE || algorithm.tag !== der.Tag.SEQUENCE) {
    throw new der.DerError("malformed request structure");
  }
  if (signature.tag !== der.Tag.BIT_STRING) throw new der.DerError("signature is not a BIT STRING");
  const infoFields = der.children(bytes, info);
  if (infoFields.length < 3 || infoFields[0].tag !== der.Tag.INTEGER) {
    throw new der.DerError("malformed certificationRequestInfo");
  }
  const spki = infoFields[2];
  if (spki.tag !== der.Tag.SEQUENCE) throw new der.DerError("malformed subjectPublicKeyInfo");
  const [algorithmOid, parameters, ...more] = der.children(bytes, algorithm);
  if (!algorithmOid || algorithmOid.tag !== der.Tag.OID || more.length > 0) {
    throw new der.DerError("malformed signature algorithm");
  }
  const signatureBits = der.contentOf(bytes, signature);
  if (signatureBits.length < 1 || signatureBits[0] !== 0) {
    throw new der.DerError("signature has unused bits");
  }
  return {
    info: der.bytesOf(bytes, info),
    spki: Buffer.from(der.bytesOf(bytes, spki)),
    algorithmOid: der.decodeOid(der.contentOf(bytes, algorithmOid)),
    algorithmParameters: parameters ? der.bytesOf(bytes, parameters) : undefined,
    signature: signatureBits.subarray(1),
  };
}

/** A parsed CSR whose self-signature is still to be checked. */
interface UnverifiedCsr {
  structure: CsrStructure;
  /** The request's SPKI, canonically re-encoded: what goes into the certificate. */
  spki: Buffer;
  publicKey: KeyObject;
  keyType: string;
}

/** Checks the signature AlgorithmIdentifier against the key, before any signature work. */
function checkSignatureAlgorithm(structure: CsrStructure, keyFamily: string): void {
  const { algorithmOid, algorithmParameters } = structure;
  const family = signatureAlgorithmKeyFamily(algorithmOid);
  if (!family) {
    throw new CsrError(
      `unsupported signature algorithm ${algorithmOid} in certificate signing request`,
    );
  }
  // RFC 8410 / RFC 5758: Ed25519 and ECDSA identifiers have no parameters (Go refuses them
  // for Ed25519); RSA PKCS#1 v1.5 ones carry NULL, some encoders omit it.
  const parametersOk = algorithmParameters === undefined ||
    (family === "rsa" && der.NULL.equals(algorithmParameters));
  if (!parametersOk) {
    throw new CsrError(
      `failed to parse certificate signing request: signature algorithm ` +
        `${signatureAlgorithmName(algorithmOid)} with illegal parameters`,
    );
  }
  if (family !== keyFamily) {
    throw new CsrError(
      `invalid signature: signature algorithm ${signatureAlgorithmName(algorithmOid)} ` +
        `does not match the ${keyFamily} public key`,
    );
  }
}

/**
 * Everything {@link decodeCsr} does except verifying the signature. All of it is cheap and
 * happens first: the structure, the key's shape (RSA exponent and modulus bounds, named
 * curves) and the signature algorithm, so that a request built to be costly to verify is
 * refused before it costs anything.
 */
function parseCsr(pem: Uint8Array | string): UnverifiedCsr {
  const [block] = decodePem(pem);
  if (!block || (block.label !== "CERTIFICATE REQUEST" && block.label !== "CERTIFICATE")) {
    throw new CsrError("invalid certificate signing request");
  }
  let structure: CsrStructure;
  let checked: CheckedSpki;
  try {
    structure = parseStructure(block.der);
    checked = checkSpki(structure.spki);
  } catch (error) {
    if (error instanceof SpkiError && error.kind === "unsupported") {
      checkAcceptedKey(error.keyType, error.message);
    }
    throw new CsrError(`failed to parse certificate signing request: ${(error as Error).message}`, {
      cause: error,
    });
  }
  checkAcceptedKey(checked.keyType);
  checkSignatureAlgorithm(structure, checked.family);
  let publicKey: KeyObject;
  try {
    publicKey = publicKeyFromSpki(checked.canonical);
  } catch (error) {
    throw new CsrError(`failed to parse certificate signing request: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return { structure, spki: checked.canonical, publicKey, keyType: checked.keyType };
}

function verified(csr: UnverifiedCsr, signatureValid: boolean): VerifiedCsr {
  if (!signatureValid) throw new CsrError("invalid signature");
  return {
    subjectPublicKeyInfo: csr.spki,
    publicKey: csr.publicKey,
    keyType: csr.keyType,
  };
}

/**
 * Decodes a PEM CSR (`CERTIFICATE REQUEST`, or the legacy `CERTIFICATE` label), verifies its
 * self-signature and checks the key type. Throws {@link CsrError} with the reason otherwise.
 */
export function decodeCsr(pem: Uint8Array | string): VerifiedCsr {
  const csr = parseCsr(pem);
  const { algorithmOid, info, signature } = csr.structure;
  return verified(csr, verifySignature(algorithmOid, csr.publicKey, info, signature));
}

/**
 * The same as {@link decodeCsr}, with the signature check on node:crypto's thread pool: what
 * the server uses, so that one request's OpenSSL work does not hold up the others.
 */
export async function decodeCsrAsync(pem: Uint8Array | string): Promise<VerifiedCsr> {
  const csr = parseCsr(pem);
  const { algorithmOid, info, signature } = csr.structure;
  return verified(csr, await verifySignatureAsync(algorithmOid, csr.publicKey, info, signature));
}
