/**
 * Verification of a certificate chain against trust anchors for `sentry inspect --anchors`,
 * reporting the first failed check and the certificate or link at fault (pure: no I/O;
 * signatures are checked with node:crypto through parse.ts).
 *
 * @module
 */
import { isCa, isSelfSigned, isSignedBy, type ParsedCertificate, subjectKeyId } from "./parse.ts";
import { signatureAlgorithmName } from "./keys.ts";
import { colonHex, fingerprint, signatureAlgorithmText } from "./describe.ts";
import {
  decodeAuthorityKeyId,
  decodeBasicConstraints,
  decodeGeneralNames,
  decodeKeyUsage,
  formatName,
  spiffeIdOf,
} from "./x509-text.ts";

/** `certificate #2 (CN=x)`, or the SPIFFE ID when the subject is empty. */
function label(cert: ParsedCertificate, index: number): string {
  let name = formatName(cert.subject);
  if (name === "") {
    const san = cert.extensions.get("2.5.29.17");
    name = (san && spiffeIdOf(decodeGeneralNames(san.value))) || "empty subject";
  }
  return `certificate #${index + 1} (${name})`;
}

/** The outcome of {@link verifyChain} (JSON-ready). */
export interface ChainVerification {
  verified: boolean;
  /** Number of self-signed certificates among the anchors given. */
  anchors: number;
  /** The subject of the anchor the chain ends at, when one was found. */
  anchor?: string;
  /** Why the chain does not verify, naming the certificate or link at fault. */
  error?: string;
  /** Index (0 = leaf) of the certificate at fault; absent when an anchor is at fault. */
  failedIndex?: number;
}

function signedBy(cert: ParsedCertificate, signer: ParsedCertificate): boolean {
  return cert.issuer.equals(signer.subject) && isSignedBy(cert, signer);
}

/**
 * Which key `cert` names as its signer and which key `signer` has, when the names match but
 * the signature does not verify: a different CA with the same name, told apart by key IDs
 * (or the signer's public key SHA-256 when it has no subject key ID).
 */
function keyMismatch(cert: ParsedCertificate, signer: ParsedCertificate): string {
  const akiExtension = cert.extensions.get("2.5.29.35");
  const aki = akiExtension ? decodeAuthorityKeyId(akiExtension.value) : undefined;
  const ski = subjectKeyId(signer);
  if (aki && ski && colonHex(aki) === colonHex(ski)) {
    return `the key IDs match (${colonHex(aki)}): the certificate was altered or damaged ` +
      `after it was signed`;
  }
  const wanted = aki ? `authority key ID ${colonHex(aki)}` : "no authority key ID";
  const has = ski
    ? `subject key ID ${colonHex(ski)}`
    : `public key SHA-256 ${fingerprint(signer.subjectPublicKeyInfo, "sha256")}`;
  return `a different CA with the same name (${wanted} vs ${has})`;
}

/**
 * Why `cert` is not signed by `signer`, called `signerName` in the message: names differ (in
 * text, or only in encoding), unsupported algorithm, or the same name with another key.
 */
function whyNotSigned(
  cert: ParsedCertificate,
  signer: ParsedCertificate,
  signerName: string,
): string {
  const issuer = formatName(cert.issuer);
  if (!cert.issuer.equals(signer.subject)) {
    const subject = formatName(signer.subject);
    if (issuer !== subject) return `its issuer is "${issuer}", not "${subject}"`;
    return `its issuer and the subject of ${signerName} both read "${issuer}" but are encoded ` +
      `differently (string types or attribute order), and names must match byte for byte`;
  }
  if (!signatureAlgorithmName(cert.signatureAlgorithm)) {
    return `unsupported signature algorithm ${signatureAlgorithmText(cert.signatureAlgorithm)}`;
  }
  return `both are named "${issuer}", but the signature does not verify with the key of ` +
    `${signerName}: ${keyMismatch(cert, signer)}`;
}

function validityProblem(cert: ParsedCertificate, now: Date): string | undefined {
  if (now < cert.notBefore) return `is not valid before ${cert.notBefore.toISOString()}`;
  if (now > cert.notAfter) return `expired at ${cert.notAfter.toISOString()}`;
  return undefined;
}

/**
 * Verifies `chain` (leaf first, then intermediates, optionally ending with an anchor) against
 * `anchors` at time `now`. Checks, in order: some anchor is self-signed; each certificate is
 * signed by the next, which is a CA allowed to sign certificates; the last one is, or is
 * signed by, a self-signed anchor (a CA itself); path length limits hold; every certificate
 * on the path, anchor included, is valid at `now`. The first failure is reported.
 */
export function verifyChain(
  chain: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  now: Date,
): ChainVerification {
  const roots = anchors.filter(isSelfSigned);
  const result = (error?: string, failedIndex?: number, anchor?: ParsedCertificate) => {
    const out: ChainVerification = { verified: error === undefined, anchors: roots.length };
    if (anchor) out.anchor = formatName(anchor.subject);
    if (error !== undefined) out.error = error;
    if (failedIndex !== undefined) out.failedIndex = failedIndex;
    return out;
  };
  if (chain.length === 0) return result("there is no certificate to verify");
  if (roots.length === 0) {
    return result(`none of the ${anchors.length} anchors is a self-signed certificate`);
  }

  const mayIssue = (signer: ParsedCertificate, what: string): string | undefined => {
    if (!isCa(signer)) return `${what} is not a CA (BasicConstraints CA:TRUE missing)`;
    const usage = signer.extensions.get("2.5.29.15");
    if (usage && !decodeKeyUsage(usage.value).includes("keyCertSign")) {
      return `${what} may not sign certificates (KeyUsage lacks keyCertSign)`;
    }
    return undefined;
  };

  for (let i = 0; i + 1 < chain.length; i++) {
    if (!signedBy(chain[i], chain[i + 1])) {
      return result(
        `${label(chain[i], i)} is not signed by ${label(chain[i + 1], i + 1)}: ${
          whyNotSigned(chain[i], chain[i + 1], `certificate #${i + 2}`)
        }`,
        i,
      );
    }
    const problem = mayIssue(chain[i + 1], label(chain[i + 1], i + 1));
    if (problem) return result(problem, i + 1);
  }

  const lastIndex = chain.length - 1;
  const last = chain[lastIndex];
  let anchor: ParsedCertificate | undefined;
  // The path: chain certificates, then the anchor unless the chain already ends with it.
  let path: ParsedCertificate[];
  if (isSelfSigned(last)) {
    anchor = roots.find((root) => root.der.equals(last.der));
    if (!anchor) {
      return result(
        `${label(last, lastIndex)} is self-signed and not among the ${roots.length} anchors`,
        lastIndex,
      );
    }
    path = [...chain];
  } else {
    anchor = roots.find((root) => signedBy(last, root));
    if (!anchor) {
      // The anchor it names: the only one, or one with its issuer's name (bytes, then text).
      const named = roots.length === 1
        ? roots[0]
        : roots.find((root) => root.subject.equals(last.issuer)) ??
          roots.find((root) => formatName(root.subject) === formatName(last.issuer));
      const why = named
        ? `: ${whyNotSigned(last, named, `the anchor "${formatName(named.subject)}"`)}`
        : ` (its issuer is "${formatName(last.issuer)}")`;
      return result(
        `${label(last, lastIndex)} is not signed by any of the ${roots.length} anchors${why}`,
        lastIndex,
      );
    }
    const problem = mayIssue(anchor, `the anchor "${formatName(anchor.subject)}"`);
    if (problem) return result(problem, undefined, anchor);
    path = [...chain, anchor];
  }

  // pathLenConstraint: how many non-self-issued intermediates may follow a CA (RFC 5280 6.1.4).
  for (let j = 1; j < path.length; j++) {
    const bc = path[j].extensions.get("2.5.29.19");
    const limit = bc ? decodeBasicConstraints(bc.value).pathLength : null;
    const below = path.slice(1, j).filter((cert) => !cert.subject.equals(cert.issuer)).length;
    if (limit !== null && below > limit) {
      const what = j < chain.length
        ? label(path[j], j)
        : `the anchor "${formatName(path[j].subject)}"`;
      return result(
        `${what} allows ${limit} intermediate(s) below it (pathlen), the chain has ${below}`,
        j < chain.length ? j : undefined,
        anchor,
      );
    }
  }

  for (let i = 0; i < chain.length; i++) {
    const problem = validityProblem(chain[i], now);
    if (problem) return result(`${label(chain[i], i)} ${problem}`, i, anchor);
  }
  if (path.length > chain.length) {
    const problem = validityProblem(anchor, now);
    if (problem) {
      return result(`the anchor "${formatName(anchor.subject)}" ${problem}`, undefined, anchor);
    }
  }
  return result(undefined, undefined, anchor);
}
