/**
 * Gap-free rotation of the JWT signing key (beyond Dapr, which replaces its key at once and so
 * breaks every relying party that cached the old JWKS). All pure: what is stored, which key
 * signs at a time `t`, and what a rotation or a pruning writes.
 *
 * Stored form: `jwt.key` holds the current key as its first PEM block (what Dapr reads) and,
 * during a rotation, the NEXT key as a second block with an RFC 1421 header
 * `Sentry-Not-Before: <ISO 8601 time>`: the time from which it signs. A key that became current
 * through a rotation keeps that header (its activation time), which dates when the keys before
 * it stopped signing. Keeping both keys in the one `jwt.key` text makes every change a single
 * compare-and-swap of the texts every store already keeps (no new file, Secret key or Vault
 * field), and PEM headers are skipped by Go's and our PEM decoders.
 *
 * Rules:
 * - signing: the next key once `t >= notBefore`, else the current key (no store write needed);
 * - publishing: `jwks.json` as stored, which holds the current key, the next key (refused when
 *   absent) and old keys until they are pruned;
 * - pruning (`sentry renew --jwt` or `--jwt-prune`): a next key whose time has come becomes the
 *   current key; keys other than current and next leave the JWKS once `activation of the
 *   current key + token TTL + clock skew` has passed (their last tokens expired), never when
 *   the activation time is unknown.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { createPublicKey, type KeyObject } from "node:crypto";
import {
  buildJwks,
  checkAlgorithmForKey,
  DEFAULT_JWT_SIGNING_ALGORITHM,
  generateJwtSigningKey,
  isJwtSigningAlgorithm,
  JwtKeyError,
  type JwtSigningAlgorithm,
  type JwtSigningKey,
  parseJwtSigningKey,
} from "./jwt-keys.ts";
import { describeKey, privateKeyToPem, spkiOf } from "../x509/keys.ts";

/** The PEM header giving the time from which a key signs. */
export const NOT_BEFORE_HEADER = "Sentry-Not-Before";

/** How long relying parties may cache the JWKS: the OIDC server's `max-age=3600`, as Dapr's. */
export const JWKS_CACHE_MAX_AGE_MS = 3600_000;

/**
 * Default publication delay of a new key: twice the JWKS cache lifetime, so that a relying
 * party that fetched the JWKS just before the new key appeared has refreshed it (with margin
 * for a late refresh) before the first token signed by the new key reaches it.
 */
export const DEFAULT_JWT_PUBLISH_DELAY_MS = 2 * JWKS_CACHE_MAX_AGE_MS;

/** The clock skew tolerated when dating the expiry of old tokens (Dapr's allowedClockSkew). */
export const JWT_ROTATION_CLOCK_SKEW_MS = 15 * 60_000;

/** One key of `jwt.key`: its PEM block (headers included) and its activation time, if known. */
export interface StoredJwtKey {
  pem: string;
  notBefore?: Date;
}

/** The keys of `jwt.key`: the current one and, during a rotation, the next one. */
export interface JwtKeyChain {
  current: StoredJwtKey;
  next?: StoredJwtKey & { notBefore: Date };
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----\r?\n?/g;

/** The `Name: value` header lines at the top of a PEM body. */
function headersOf(body: string): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of body.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon < 0) break;
    headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return headers;
}

/** Splits `jwt.key` into its keys; refuses more than two or a next key without its time. */
export function parseJwtKeyChain(text: string, file = "jwt.key"): JwtKeyChain {
  const keys: StoredJwtKey[] = [];
  for (const match of text.matchAll(BLOCK)) {
    const value = headersOf(match[2]).get(NOT_BEFORE_HEADER);
    let notBefore: Date | undefined;
    if (value !== undefined) {
      notBefore = new Date(value);
      if (Number.isNaN(notBefore.getTime())) {
        throw new JwtKeyError(
          `${file}: key #${keys.length + 1} has an invalid ${NOT_BEFORE_HEADER} ${
            JSON.stringify(value)
          }`,
        );
      }
    }
    keys.push({ pem: match[0].endsWith("\n") ? match[0] : match[0] + "\n", notBefore });
  }
  if (keys.length === 0) throw new JwtKeyError(`${file}: JWT signing key is not PEM encoded`);
  if (keys.length > 2) {
    throw new JwtKeyError(
      `${file} holds ${keys.length} keys: at most the current key and the next one`,
    );
  }
  const [current, next] = keys;
  if (!next) return { current };
  if (!next.notBefore) {
    throw new JwtKeyError(
      `${file}: the next key (second PEM block) has no ${NOT_BEFORE_HEADER} header`,
    );
  }
  return { current, next: { pem: next.pem, notBefore: next.notBefore } };
}

/** Writes a key chain back as the text of `jwt.key`. */
export function formatJwtKeyChain(chain: JwtKeyChain): string {
  return chain.current.pem + (chain.next?.pem ?? "");
}

/** A PKCS#8 PEM of `key` with the {@link NOT_BEFORE_HEADER} header. */
export function pemWithNotBefore(key: KeyObject, notBefore: Date): string {
  const pem = privateKeyToPem(key);
  return pem.replace(
    /^(-----BEGIN [A-Z ]+-----\n)/,
    `$1${NOT_BEFORE_HEADER}: ${notBefore.toISOString()}\n\n`,
  );
}

/** The key to sign with at `now`: the next key once its time has come, else the current one. */
export function jwtKeyAt(key: JwtSigningKey, now: Date): JwtSigningKey {
  return key.next && now.getTime() >= key.next.notBefore.getTime() ? key.next.key : key;
}

/** The members of a JWKS document, whatever its form (a set, or one JWK). */
function jwksMembers(json: string, file: string): Record<string, unknown>[] {
  let document: unknown;
  try {
    document = JSON.parse(json);
  } catch (error) {
    throw new JwtKeyError(`${file}: failed to parse JWKS: ${(error as Error).message}`);
  }
  const set = document as { keys?: unknown };
  const members = set && typeof set === "object" && "keys" in set ? set.keys : [document];
  if (!Array.isArray(members)) throw new JwtKeyError(`${file}: "keys" is not an array`);
  return members as Record<string, unknown>[];
}

/** The DER SubjectPublicKeyInfo of a JWK member, or undefined when it has none (or is bad). */
function memberSpki(member: Record<string, unknown>): Buffer | undefined {
  try {
    const members =
      { RSA: ["kty", "n", "e"], EC: ["kty", "crv", "x", "y"], OKP: ["kty", "crv", "x"] }[
        String(member.kty)
      ];
    if (!members) return undefined;
    const jwk = Object.fromEntries(members.map((name) => [name, member[name]]));
    return spkiOf(createPublicKey({ key: jwk, format: "jwk" }));
  } catch {
    return undefined;
  }
}

/** The algorithm a rotation keeps: the current key's JWKS `alg`, else the one its type implies. */
function algorithmOf(key: KeyObject, members: Record<string, unknown>[]): JwtSigningAlgorithm {
  const spki = spkiOf(key);
  const entry = members.find((member) => memberSpki(member)?.equals(spki));
  const alg = typeof entry?.alg === "string" ? entry.alg : undefined;
  if (alg && isJwtSigningAlgorithm(alg)) return alg;
  const byKind: Record<string, JwtSigningAlgorithm> = {
    "ec-p256": "ES256",
    "ec-p384": "ES384",
    "ec-p521": "ES512",
    ed25519: "EdDSA",
  };
  return byKind[describeKey(key)] ?? DEFAULT_JWT_SIGNING_ALGORITHM;
}

/** The stored JWT texts a rotation or a pruning reads and writes. */
export interface JwtTexts {
  keyPem: string;
  jwksJson: string;
}

/** What {@link pruneJwtKeys} did. */
export interface PruneResult extends JwtTexts {
  /** True when the next key became the current key. */
  promoted: boolean;
  /** The algorithm of the current key (its JWKS `alg`, else the one its type implies). */
  algorithm: JwtSigningAlgorithm;
  /** The kids (or `#n`) of the keys removed from the JWKS. */
  removed: string[];
  /** Old keys kept in the JWKS, with when they may go (undefined: activation time unknown). */
  kept: { kid: string; retireAt?: Date }[];
}

/**
 * At `now`: makes a next key whose time has come the current key, and removes from the JWKS the
 * keys that are neither current nor next once their last tokens expired (`current activation +
 * ttlMs + skewMs`). Keeps them all when the current key's activation time is unknown.
 */
export function pruneJwtKeys(
  texts: JwtTexts,
  options: { now: Date; ttlMs: number; skewMs?: number; names?: { key: string; jwks: string } },
): PruneResult {
  const names = options.names ?? { key: "jwt.key", jwks: "jwks.json" };
  let chain = parseJwtKeyChain(texts.keyPem, names.key);
  let promoted = false;
  if (chain.next && options.now.getTime() >= chain.next.notBefore.getTime()) {
    chain = { current: chain.next };
    promoted = true;
  }
  const keys = [chain.current, chain.next].filter((key) => key !== undefined).map((key) =>
    parseJwtSigningKey(key.pem, names.key)
  );
  const live = keys.map(spkiOf);
  const retireAt = chain.current.notBefore &&
    new Date(
      chain.current.notBefore.getTime() + options.ttlMs +
        (options.skewMs ?? JWT_ROTATION_CLOCK_SKEW_MS),
    );
  const members = jwksMembers(texts.jwksJson, names.jwks);
  const removed: string[] = [];
  const kept: PruneResult["kept"] = [];
  const remaining = members.filter((member, index) => {
    const spki = memberSpki(member);
    if (spki && live.some((key) => key.equals(spki))) return true;
    const kid = typeof member.kid === "string" ? member.kid : `#${index + 1}`;
    if (retireAt && options.now.getTime() >= retireAt.getTime()) {
      removed.push(kid);
      return false;
    }
    kept.push({ kid, retireAt });
    return true;
  });
  const jwksJson = removed.length === 0 ? texts.jwksJson : JSON.stringify({ keys: remaining });
  const keyPem = promoted ? formatJwtKeyChain(chain) : texts.keyPem;
  return { keyPem, jwksJson, promoted, algorithm: algorithmOf(keys[0], members), removed, kept };
}

/** What {@link rotateJwtKey} wrote. */
export interface RotateResult extends JwtTexts {
  keyId: string;
  algorithm: JwtSigningAlgorithm;
  notBefore: Date;
}

/**
 * Starts a rotation at `now`: a new key of the current key's kind (same algorithm), published
 * in the JWKS at once and stored as the next key, signing from `now + delayMs`. Refuses while a
 * next key is still waiting (prune first: its time must have come).
 */
export async function rotateJwtKey(
  texts: JwtTexts,
  options: { now: Date; delayMs: number; names?: { key: string; jwks: string } },
): Promise<RotateResult> {
  const names = options.names ?? { key: "jwt.key", jwks: "jwks.json" };
  const chain = parseJwtKeyChain(texts.keyPem, names.key);
  if (chain.next) {
    throw new JwtKeyError(
      `${names.key} already holds a next key, signing from ${chain.next.notBefore.toISOString()}: ` +
        `rotate again after that time`,
    );
  }
  const current = parseJwtSigningKey(chain.current.pem, names.key);
  const members = jwksMembers(texts.jwksJson, names.jwks);
  const algorithm = algorithmOf(current, members);
  const key = await generateJwtSigningKey(algorithm);
  checkAlgorithmForKey(key, algorithm, "the new key");
  const built = await buildJwks(key, { algorithm });
  const member = built.jwks.keys[0] as Record<string, unknown>;
  const notBefore = new Date(options.now.getTime() + options.delayMs);
  return {
    keyPem: formatJwtKeyChain({
      current: chain.current,
      next: { pem: pemWithNotBefore(key, notBefore), notBefore },
    }),
    jwksJson: JSON.stringify({ keys: [...members, member] }),
    keyId: String(member.kid),
    algorithm,
    notBefore,
  };
}

/**
 * Withdraws a next key that has not started signing (a root rotation given up before its
 * switch): `jwt.key` keeps only the current key and the next key leaves the JWKS. Refuses once
 * the next key's time has come (tokens signed with it may be out).
 */
export function withdrawNextJwtKey(
  texts: JwtTexts,
  options: { now: Date; names?: { key: string; jwks: string } },
): JwtTexts {
  const names = options.names ?? { key: "jwt.key", jwks: "jwks.json" };
  const chain = parseJwtKeyChain(texts.keyPem, names.key);
  if (!chain.next) return texts;
  if (options.now.getTime() >= chain.next.notBefore.getTime()) {
    throw new JwtKeyError(
      `${names.key}: the next key signs since ${chain.next.notBefore.toISOString()}: ` +
        `too late to withdraw it`,
    );
  }
  const next = spkiOf(parseJwtSigningKey(chain.next.pem, names.key));
  const members = jwksMembers(texts.jwksJson, names.jwks);
  const remaining = members.filter((member) => !memberSpki(member)?.equals(next));
  return {
    keyPem: formatJwtKeyChain({ current: chain.current }),
    jwksJson: remaining.length === members.length
      ? texts.jwksJson
      : JSON.stringify({ keys: remaining }),
  };
}
