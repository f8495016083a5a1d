/**
 * Builds PKCS#10 certificate signing requests (RFC 2986) the way daprd does: version 0, an
 * EMPTY subject, the key's SubjectPublicKeyInfo, no attributes, signed with the key itself
 * (Ed25519 without a hash, ECDSA P-256/P-384 with SHA-256/SHA-384, RSA with
 * sha256WithRSAEncryption). Sentry only reads the public key and checks the signature.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import type { KeyObject } from "node:crypto";
import * as der from "./der.ts";
import { SigningKey } from "./keys.ts";
import { encodePem } from "./pem.ts";

/** The empty X.501 Name (an empty SEQUENCE), as Go writes for an empty template. */
const EMPTY_NAME = der.sequence();

/** `attributes [0] IMPLICIT SET OF Attribute`, empty. */
const NO_ATTRIBUTES = der.explicit(0, new Uint8Array(0));

/**
 * The DER CertificationRequest for `privateKey`: empty subject, no attributes, signed with
 * the key. Throws for key types sentry cannot sign with (e.g. P-521 is fine, X25519 is not).
 */
export function buildCsr(privateKey: KeyObject): Buffer {
  if (privateKey.type !== "private") throw new Error("a CSR must be signed with a private key");
  const signer = new SigningKey(privateKey);
  const info = der.sequence(der.smallInteger(0), EMPTY_NAME, signer.spki, NO_ATTRIBUTES);
  return der.sequence(info, signer.algorithmIdentifier, der.bitString(signer.sign(info)));
}

/** The CSR for `privateKey` as a `CERTIFICATE REQUEST` PEM block (what daprd sends). */
export function csrPem(privateKey: KeyObject): string {
  return encodePem("CERTIFICATE REQUEST", buildCsr(privateKey));
}
