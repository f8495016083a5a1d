/**
 * The TBSCertificate of Dapr's workload profile, built from a per-issuer template: everything
 * that is the same for every certificate an issuer signs (version, signature algorithm, issuer
 * name, the empty subject, KeyUsage, ExtendedKeyUsage and AuthorityKeyIdentifier extensions)
 * is encoded once, and each request only encodes what changes: the serial, the validity, the
 * public key and the SubjectAltName. The template is cached per issuer identity, i.e. per
 * loaded trust bundle, and dropped with it.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  authorityKeyIdentifier,
  EMPTY_NAME,
  encodeExtension,
  extendedKeyUsage,
  ExtKeyUsage,
  type IssuerIdentity,
  KeyUsage,
  keyUsage,
  randomSerial,
  subjectAltName,
  type Validity,
} from "../x509/certificate.ts";
import * as der from "../x509/der.ts";
import type { SpiffeId } from "./spiffe.ts";

interface WorkloadTemplate {
  /** Signature AlgorithmIdentifier followed by the issuer Name. */
  algorithmAndIssuer: Buffer;
  /** KeyUsage then ExtendedKeyUsage, encoded. */
  extensionsBeforeSan: Buffer;
  /** AuthorityKeyIdentifier, encoded. */
  extensionsAfterSan: Buffer;
}

/** `[0] INTEGER 2`: every certificate is X.509 v3. */
const VERSION_3 = der.explicit(0, der.smallInteger(2));
const templates = new WeakMap<IssuerIdentity, WorkloadTemplate>();

function templateFor(issuer: IssuerIdentity): WorkloadTemplate {
  let template = templates.get(issuer);
  if (!template) {
    template = {
      algorithmAndIssuer: Buffer.concat([issuer.key.algorithmIdentifier, issuer.subject]),
      extensionsBeforeSan: Buffer.concat([
        encodeExtension(keyUsage(KeyUsage.digitalSignature)),
        encodeExtension(extendedKeyUsage(ExtKeyUsage.serverAuth, ExtKeyUsage.clientAuth)),
      ]),
      extensionsAfterSan: encodeExtension(authorityKeyIdentifier(issuer.keyId)),
    };
    templates.set(issuer, template);
  }
  return template;
}

/**
 * The workload profile's TBSCertificate: empty subject, one critical SubjectAltName with the
 * SPIFFE ID (plus `dnsNames`, used only for sentry's own serving certificate), critical
 * KeyUsage digitalSignature, EKU serverAuth + clientAuth, no BasicConstraints, AKI = the
 * issuer's key id. `serial` is random unless given (tests compare encodings).
 */
export function encodeWorkloadTbs(
  id: SpiffeId,
  workloadSpki: Uint8Array,
  issuer: IssuerIdentity,
  validity: Validity,
  dnsNames: readonly string[] = [],
  serial: Uint8Array = randomSerial(),
): Buffer {
  const template = templateFor(issuer);
  const san = encodeExtension(subjectAltName({ uris: [id.toString()], dnsNames }, true));
  return der.sequence(
    VERSION_3,
    der.unsignedInteger(serial),
    template.algorithmAndIssuer,
    der.sequence(der.time(validity.notBefore), der.time(validity.notAfter)),
    EMPTY_NAME,
    workloadSpki,
    der.explicit(
      3,
      der.sequence(template.extensionsBeforeSan, san, template.extensionsAfterSan),
    ),
  );
}
