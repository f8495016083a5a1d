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
  describeKey,
  publicKeyFromSpki,
  signatureAlgorithmName,
  verifySignature,
  verifySignatureAsync,
} from "./keys.ts";
import { decodePem } from "./pem.ts";

/** Why a CSR was refused; `message` is safe to return to the caller. */
export class CsrError extends Error {
  override name = "CsrError";
}

/** The useful content of a verified CSR. */
export interface VerifiedCsr {
  /** DER SubjectPublicKeyInfo, byte for byte as in the request. */
  subjectPublicKeyInfo: Buffer;
  publicKey: KeyObject;
  /** Short key description, e.g. `ec-p256`. */
  keyType: string;
}

/** Key types a workload may hold: ECDSA P-256/P-384, Ed25519, RSA of at least 2048 bits. */
function checkAcceptedKey(keyType: string): void {
  if (keyType === "ec-p256" || keyType === "ec-p384" || keyType === "ed25519") return;
  const rsa = /^rsa-(\d+)$/.exec(keyType);
  if (rsa && Number(rsa[1]) >= 2048) return;
  throw new CsrError(
    `unsupported public key ${keyType} in certificate signing request: ` +
      `use ECDSA P-256/P-384, Ed25519 or RSA of at least 2048 bits`,
  );
}

interface CsrStructure {
  info: Uint8Array;
  spki: Buffer;
  algorithmOid: string;
  signature: Uint8Array;
}

function parseStructure(bytes: Uint8Array): CsrStructure {
  const root = der.expectElement(bytes, der.Tag.SEQUENCE);
  if (root.end !== bytes.length) throw new der.DerError("trailing data after the request");
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
  const [algorithmOid] = der.children(bytes, algorithm);
  if (!algorithmOid || algorithmOid.tag !== der.Tag.OID) {
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
    signature: signatureBits.subarray(1),
  };
}

/** A parsed CSR whose self-signature is still to be checked. */
interface UnverifiedCsr {
  structure: CsrStructure;
  publicKey: KeyObject;
  keyType: string;
}

/** Everything {@link decodeCsr} does except verifying the signature. */
function parseCsr(pem: Uint8Array | string): UnverifiedCsr {
  const [block] = decodePem(pem);
  if (!block || (block.label !== "CERTIFICATE REQUEST" && block.label !== "CERTIFICATE")) {
    throw new CsrError("invalid certificate signing request");
  }
  let structure: CsrStructure;
  let publicKey: KeyObject;
  try {
    structure = parseStructure(block.der);
    publicKey = publicKeyFromSpki(structure.spki);
  } catch (error) {
    throw new CsrError(`failed to parse certificate signing request: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const keyType = describeKey(publicKey);
  checkAcceptedKey(keyType);
  if (!signatureAlgorithmName(structure.algorithmOid)) {
    throw new CsrError(
      `unsupported signature algorithm ${structure.algorithmOid} in certificate signing request`,
    );
  }
  return { structure, publicKey, keyType };
}

function verified(csr: UnverifiedCsr, signatureValid: boolean): VerifiedCsr {
  if (!signatureValid) throw new CsrError("invalid signature");
  return {
    subjectPublicKeyInfo: csr.structure.spki,
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
