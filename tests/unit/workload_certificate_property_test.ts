/**
 * Property test of the workload signing fast path: decodeCsr → issueWorkloadCertificate (and
 * their thread-pool twins decodeCsrAsync / issueWorkloadCertificateAsync, which the server uses).
 *
 * For random issuers (ECDSA P-256 / Ed25519, validity windows before 2000, around 2050 and
 * short-lived ones), workload keys (EC P-256/P-384, Ed25519, RSA 2048), SPIFFE IDs, lifetimes,
 * clock skews, clocks and DNS names, the issued certificate is read back with @peculiar/x509 — an
 * ASN.1 reader that shares no code with src/x509/der.ts or parse.ts — and every field is compared
 * with what the inputs and Dapr's workload profile (src/ca/workload-tbs.ts) demand: version,
 * serial, issuer and subject names, validity and its clamping, public key, the exact extension
 * set, SANs, signature algorithm and signature, and the returned chain. The hand-written DER
 * encoder is fast but easy to get subtly wrong at the edges (length octets, UTCTime versus
 * GeneralizedTime, serial sign bytes); random inputs reach edges that example tests miss.
 *
 * Negative properties: a CSR with a corrupted signature, public key or any other byte, or cut
 * short or extended, is refused with a CsrError and never with another error or a crash.
 *
 * The generator is seeded: set PROPERTY_SEED to replay a run (PROPERTY_CASES and
 * PROPERTY_MUTATIONS scale it for a soak run); every failure names the seed and case number, and
 * each case draws from its own stream, so a failing case replays the same with the same seed.
 */
import "reflect-metadata";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { generateKeyPairSync, type KeyObject, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { generateBundle, type TrustBundle, validateBundle } from "../../src/ca/bundle.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { CsrError, decodeCsr, decodeCsrAsync } from "../../src/x509/csr.ts";
import type { CaKeyAlgorithm } from "../../src/x509/keys.ts";
import {
  type IssuedCertificate,
  issueWorkloadCertificate,
  issueWorkloadCertificateAsync,
} from "../../src/ca/signer.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const SEED = Number(Deno.env.get("PROPERTY_SEED") ?? 0x5e17e5);
const CASES = Number(Deno.env.get("PROPERTY_CASES") ?? 200);
const MUTATIONS = Number(Deno.env.get("PROPERTY_MUTATIONS") ?? 150);

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const YEAR = 365 * DAY;

const OID = {
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  authorityKeyId: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

/** What profiles.ts / workload-tbs.ts write for a workload: [OID, critical], by OID. */
const WORKLOAD_EXTENSIONS: [string, boolean][] = [
  [OID.keyUsage, true],
  [OID.extKeyUsage, false],
  [OID.subjectAltName, true], // critical because the subject is empty (RFC 5280 §4.2.1.6)
  [OID.authorityKeyId, false],
].sort() as [string, boolean][];

/** The signature algorithm each issuer key signs with, as x509 and its text dump name it. */
const SIGNATURE: Record<CaKeyAlgorithm, { web: object; text: string }> = {
  "ecdsa-p256": { web: { name: "ECDSA", hash: { name: "SHA-256" } }, text: "ecdsaWithSHA256" },
  "ed25519": { web: { name: "Ed25519" }, text: "1.3.101.112" },
};

// ---- seeded randomness ----

/** mulberry32: a tiny seeded PRNG (uniform in [0, 1)). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Random {
  readonly #next: () => number;

  /** Case `index` of the run seeded with `seed` gets its own stream. */
  constructor(seed: number, index: number) {
    this.#next = mulberry32(seed ^ Math.imul(index + 1, 0x9e3779b1));
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.#next() * (max - min + 1));
  }

  pick<T>(items: ArrayLike<T>): T {
    return items[this.int(0, items.length - 1)];
  }

  chance(probability: number): boolean {
    return this.#next() < probability;
  }

  /** Short strings are likelier (edge cases), but lengths go up to `max`. */
  string(alphabet: string, max: number): string {
    const length = this.chance(0.3) ? this.int(1, 3) : this.int(1, max);
    return Array.from({ length }, () => this.pick(alphabet)).join("");
  }
}

// ---- fixtures: a few issuers and workload keys, made once ----

const LOWER = "abcdefghijklmnopqrstuvwxyz";
const DIGITS = "0123456789";
const TRUST_DOMAIN_CHARS = LOWER + DIGITS + "._-";
const SEGMENT_CHARS = LOWER + LOWER.toUpperCase() + DIGITS + "._-";

interface Issuer {
  name: string;
  algorithm: CaKeyAlgorithm;
  trust: TrustBundle;
  /** The issuer certificate as @peculiar/x509 reads it. */
  cert: x509.X509Certificate;
}

const ISSUER_SPECS: {
  algorithm: CaKeyAlgorithm;
  now: string;
  ttlMs: number;
  issuerTtlMs?: number;
  skewMs: number;
}[] = [
  { algorithm: "ecdsa-p256", now: "2031-03-04T05:06:07Z", ttlMs: YEAR, skewMs: 15 * MINUTE },
  { algorithm: "ed25519", now: "2031-03-04T05:06:07Z", ttlMs: YEAR, skewMs: 15 * MINUTE },
  // Crosses 2050: UTCTime before, GeneralizedTime after; `now` not on a whole second.
  { algorithm: "ecdsa-p256", now: "2049-11-20T10:00:00.750Z", ttlMs: 90 * DAY, skewMs: HOUR },
  {
    algorithm: "ed25519",
    now: "2049-12-31T23:30:00Z",
    ttlMs: YEAR,
    issuerTtlMs: 2 * DAY,
    skewMs: 0,
  },
  // Crosses 2000 (UTCTime years 99 → 00).
  { algorithm: "ed25519", now: "1999-12-15T12:34:56.789Z", ttlMs: 60 * DAY, skewMs: 0 },
  // A one-hour issuer: both ends of the workload validity are clamped most of the time.
  {
    algorithm: "ecdsa-p256",
    now: "2026-07-01T00:00:00.001Z",
    ttlMs: DAY,
    issuerTtlMs: HOUR,
    skewMs: 0,
  },
];

const issuers: Issuer[] = ISSUER_SPECS.map((spec, index) => {
  const now = new Date(spec.now);
  const pem = generateBundle({ ...spec, trustDomain: `td-${index}.example`, namespace: "ns", now });
  return {
    name: `#${index} ${spec.algorithm} from ${spec.now}`,
    algorithm: spec.algorithm,
    trust: validateBundle(pem, now),
    cert: new x509.X509Certificate(pem.issuerCrt),
  };
});

interface WorkloadKey {
  name: string;
  privateKey: KeyObject;
  spki: Buffer;
}

const KEY_GENERATORS: Record<string, () => { privateKey: KeyObject; publicKey: KeyObject }> = {
  "ec-p256": () => generateKeyPairSync("ec", { namedCurve: "P-256" }),
  "ec-p384": () => generateKeyPairSync("ec", { namedCurve: "P-384" }),
  "ed25519": () => generateKeyPairSync("ed25519"),
  "rsa-2048": () => generateKeyPairSync("rsa", { modulusLength: 2048 }),
};

const workloadKeys: WorkloadKey[] = Object.entries(KEY_GENERATORS).flatMap(([type, generate]) =>
  [0, 1, 2].map((index) => {
    const { privateKey, publicKey } = generate();
    const spki = publicKey.export({ type: "spki", format: "der" }) as Buffer;
    return { name: `${type}#${index}`, privateKey, spki };
  })
);

// ---- small helpers ----

function hex(bytes: ArrayBuffer | Uint8Array): string {
  return Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString("hex");
}

function floorSecond(ms: number): number {
  return Math.floor(ms / SECOND) * SECOND;
}

function toPem(label: string, der: Uint8Array): string {
  const lines = Buffer.from(der).toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function pemBlocks(pem: string): Buffer[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----\n([\s\S]*?)-----END CERTIFICATE-----\n/g)]
    .map((match) => Buffer.from(match[1].replace(/\s+/g, ""), "base64"));
}

/** The TLV header at `offset`: its size and the content length (definite lengths only). */
function tlvHeader(der: Uint8Array, offset: number): { size: number; length: number } {
  const first = der[offset + 1];
  if (first < 0x80) return { size: 2, length: first };
  let length = 0;
  for (let i = 0; i < (first & 0x7f); i++) length = length * 256 + der[offset + 2 + i];
  return { size: 2 + (first & 0x7f), length };
}

/** Offset just past the DER element that starts at `offset`. */
function elementEnd(der: Uint8Array, offset: number): number {
  const { size, length } = tlvHeader(der, offset);
  return offset + size + length;
}

/**
 * Walks `der` TLV by TLV and fails on what x509's lenient (BER) reader accepts but DER and Go's
 * crypto/x509 (the daprd side) do not: non-minimal or long-form-for-short lengths, elements that
 * overrun their parent, BOOLEANs other than TRUE (FALSE is a DEFAULT, never written), and times
 * in the wrong form (RFC 5280: UTCTime through 2049, GeneralizedTime from 2050, whole seconds).
 */
function assertStrictDer(der: Uint8Array, start = 0, end = der.length): void {
  for (let at = start; at < end;) {
    const tag = der[at];
    const { size, length } = tlvHeader(der, at);
    const content = der.subarray(at + size, at + size + length);
    assert.ok(at + size + length <= end, `element at ${at} overruns its parent`);
    assert.ok(size === 2 || (der[at + 2] !== 0 && length >= 0x80), `length at ${at} not minimal`);
    assert.notEqual(tag & 0x1f, 0x1f, `multi-byte tag at ${at}`);
    const text = Buffer.from(content).toString("latin1");
    if (tag === 0x01) assert.equal(hex(content), "ff", `BOOLEAN at ${at}`);
    if (tag === 0x17) assert.match(text, /^\d{12}Z$/, `UTCTime at ${at}`);
    if (tag === 0x18) {
      assert.match(text, /^(20[5-9]\d|2[1-9]\d\d)\d{10}Z$/, `GeneralizedTime at ${at}`);
    }
    if (tag & 0x20) assertStrictDer(der, at + size, at + size + length);
    at += size + length;
  }
}

/** Re-throws a failure with the case that produced it, so that it can be replayed. */
async function inCase(context: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    throw new Error(`PROPERTY_SEED=${SEED} ${context}`, { cause: error });
  }
}

// ---- the positive property ----

interface Case {
  issuer: Issuer;
  key: WorkloadKey;
  trustDomain: string;
  namespace: string;
  appId: string;
  ttlMs: number;
  skewMs: number;
  now: Date;
  dnsNames: string[];
  useAsync: boolean;
}

function randomSegment(rng: Random, chars = SEGMENT_CHARS): string {
  for (;;) {
    const segment = rng.string(chars, 60);
    if (segment !== "." && segment !== "..") return segment;
  }
}

function randomDnsName(rng: Random): string {
  const label = () => {
    const inner = rng.chance(0.3) ? rng.string(LOWER + DIGITS + "-", 18) : "";
    return rng.pick(LOWER + DIGITS) + inner + (inner ? rng.pick(LOWER + DIGITS) : "");
  };
  const labels = Array.from({ length: rng.int(1, 4) }, label);
  return (rng.chance(0.1) ? "*." : "") + labels.join(".");
}

/** A clock within the issuer's validity, often near (or exactly at) either end. */
function randomNow(rng: Random, issuer: Issuer): Date {
  const start = issuer.trust.issuerNotBefore.getTime();
  const end = issuer.trust.issuerNotAfter.getTime();
  const near = (from: number, span: number) => Math.min(end, Math.max(start, from + span));
  return new Date(
    rng.pick([
      () => rng.int(start, end),
      () => rng.int(start, end),
      () => near(start, rng.int(0, 2 * HOUR)),
      () => near(end, -rng.int(0, 2 * DAY)),
      () => rng.pick([start, end]),
    ])(),
  );
}

function randomCase(rng: Random): Case {
  const issuer = rng.pick(issuers);
  const [minTtl, maxTtl] = rng.pick([[MINUTE, HOUR], [HOUR, 30 * DAY], [30 * DAY, YEAR]]);
  return {
    issuer,
    key: rng.pick(workloadKeys),
    trustDomain: randomSegment(rng, TRUST_DOMAIN_CHARS), // never '.' or '..', as a path segment
    namespace: randomSegment(rng),
    appId: randomSegment(rng),
    ttlMs: rng.int(minTtl, maxTtl),
    skewMs: rng.chance(0.2) ? 0 : rng.int(0, HOUR),
    now: randomNow(rng, issuer),
    dnsNames: Array.from({ length: rng.chance(0.5) ? 0 : rng.int(1, 3) }, () => randomDnsName(rng)),
    useAsync: rng.chance(0.5),
  };
}

function describeCase(c: Case): string {
  return JSON.stringify({
    issuer: c.issuer.name,
    key: c.key.name,
    id: `spiffe://${c.trustDomain}/ns/${c.namespace}/${c.appId}`,
    ttlMs: c.ttlMs,
    skewMs: c.skewMs,
    now: c.now.toISOString(),
    dnsNames: c.dnsNames,
    async: c.useAsync,
  });
}

/** The fast path under test: CSR in, certificate chain out. */
async function issue(c: Case, id: SpiffeId): Promise<IssuedCertificate> {
  const csr = csrPem(c.key.privateKey);
  const verified = c.useAsync ? await decodeCsrAsync(csr) : decodeCsr(csr);
  assert.equal(hex(verified.subjectPublicKeyInfo), hex(c.key.spki), "decodeCsr's SPKI");
  const request = new x509.Pkcs10CertificateRequest(csr);
  assert.equal(hex(request.publicKey.rawData), hex(c.key.spki), "x509's reading of the CSR");
  assert.ok(await request.verify(), "x509 rejects the CSR that decodeCsr accepted");
  const timing = { ttlMs: c.ttlMs, skewMs: c.skewMs };
  const spki = verified.subjectPublicKeyInfo;
  return c.useAsync
    ? await issueWorkloadCertificateAsync(c.issuer.trust, id, spki, timing, c.now, c.dnsNames)
    : issueWorkloadCertificate(c.issuer.trust, id, spki, timing, c.now, c.dnsNames);
}

/** Version, serial, names and public key. Returns the serial (hex) for the uniqueness check. */
function checkHeader(c: Case, cert: x509.X509Certificate): string {
  const data = cert.toTextObject()["Data"] as x509.TextObject;
  assert.equal(data["Version"], "v3 (2)");
  const serial = new Uint8Array(data["Serial Number"] as ArrayBuffer);
  assert.ok(serial.length >= 1 && serial.length <= 20, `serial has ${serial.length} octets`);
  const magnitude = serial[0] === 0 ? serial.subarray(1) : serial;
  assert.ok(magnitude.length > 0 && magnitude.some((byte) => byte !== 0), "serial is zero");
  assert.ok(serial[0] < 0x80, `serial ${hex(serial)} is negative`);
  assert.ok(serial[0] !== 0 || serial[1] >= 0x80, `serial ${hex(serial)} is not minimal DER`);
  // The profile's own promise (README, certificate.ts): random 128 bits, top bit clear, so
  // always 16 octets without a sign byte.
  assert.ok(serial.length === 16 && serial[0] >= 0x01, `serial ${hex(serial)} is not 128-bit`);

  assert.equal(
    hex(cert.issuerName.toArrayBuffer()),
    hex(c.issuer.cert.subjectName.toArrayBuffer()),
  );
  assert.equal(cert.issuer, c.issuer.cert.subject);
  assert.equal(hex(cert.issuerName.toArrayBuffer()), hex(c.issuer.trust.issuer.subject));
  assert.equal(hex(cert.subjectName.toArrayBuffer()), "3000", "the subject is the empty Name");
  assert.equal(cert.subject, "");
  assert.equal(hex(cert.publicKey.rawData), hex(c.key.spki), "SubjectPublicKeyInfo");
  return hex(magnitude);
}

/** NotBefore = now - skew, NotAfter = now + ttl, both clamped to the issuer, whole seconds. */
function checkValidity(c: Case, cert: x509.X509Certificate, issued: IssuedCertificate): void {
  const issuerStart = c.issuer.cert.notBefore.getTime();
  const issuerEnd = c.issuer.cert.notAfter.getTime();
  assert.equal(issuerStart, c.issuer.trust.issuerNotBefore.getTime());
  assert.equal(issuerEnd, c.issuer.trust.issuerNotAfter.getTime());
  const now = c.now.getTime();
  const notBefore = floorSecond(Math.max(now - c.skewMs, issuerStart));
  const notAfter = floorSecond(Math.min(now + c.ttlMs, issuerEnd));
  assert.equal(cert.notBefore.toISOString(), new Date(notBefore).toISOString(), "NotBefore");
  assert.equal(cert.notAfter.toISOString(), new Date(notAfter).toISOString(), "NotAfter");
  assert.equal(issued.notBefore.getTime(), notBefore, "returned notBefore");
  assert.equal(issued.notAfter.getTime(), notAfter, "returned notAfter");
  assert.ok(notBefore <= notAfter);
}

async function checkExtensions(c: Case, id: SpiffeId, cert: x509.X509Certificate): Promise<void> {
  const found = Array.from(cert.extensions, (extension) => [extension.type, extension.critical])
    .sort();
  assert.deepEqual(found, WORKLOAD_EXTENSIONS, "extension set (no BasicConstraints, no SKI)");

  for (const extension of cert.extensions) assertStrictDer(new Uint8Array(extension.value));

  // This project's profile (README, workload-tbs.ts): digitalSignature only. Upstream Dapr's
  // generateBaseCert also sets keyEncipherment; change both lines if the profile follows it.
  const keyUsage = cert.getExtension(x509.KeyUsagesExtension)!;
  assert.equal(keyUsage.usages, x509.KeyUsageFlags.digitalSignature);
  // DER drops trailing zero bits of a named bit list: digitalSignature alone is 07 80.
  assert.equal(hex(keyUsage.value), "03020780", "KeyUsage BIT STRING");
  const extKeyUsage = cert.getExtension(x509.ExtendedKeyUsageExtension)!;
  assert.deepEqual([...extKeyUsage.usages].sort(), [OID.serverAuth, OID.clientAuth].sort());

  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)!.names.items;
  assert.deepEqual(names.filter((name) => name.type === "url").map((name) => name.value), [
    id.toString(),
  ]);
  assert.deepEqual(
    names.filter((name) => name.type === "dns").map((name) => name.value),
    c.dnsNames,
  );
  assert.equal(names.length, 1 + c.dnsNames.length, "no other kind of SAN");

  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)!;
  const issuerSki = c.issuer.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
  assert.equal(aki.keyId, issuerSki, "AKI = the issuer's SKI");
  assert.equal(aki.keyId, hex(await c.issuer.cert.publicKey.getKeyIdentifier("SHA-1")));
  assert.equal(aki.certId, undefined, "AKI holds the key identifier only");
}

async function checkSignature(c: Case, cert: x509.X509Certificate): Promise<void> {
  const expected = SIGNATURE[c.issuer.algorithm];
  assert.deepEqual({ ...cert.signatureAlgorithm }, expected.web);
  const text = cert.toTextObject();
  const inner = (text["Data"] as x509.TextObject)["Signature Algorithm"] as x509.TextObject;
  const outer = (text["Signature"] as x509.TextObject)["Algorithm"] as x509.TextObject;
  assert.equal(inner[x509.TextObject.VALUE], expected.text, "TBSCertificate.signature");
  assert.equal(outer[x509.TextObject.VALUE], expected.text, "Certificate.signatureAlgorithm");
  // signatureOnly: x509's date check is strict (NotBefore < date < NotAfter) and the clamped
  // validity may be a single instant; the validity is checked exactly in checkValidity.
  const publicKey = c.issuer.cert.publicKey;
  assert.ok(await cert.verify({ publicKey, signatureOnly: true }), "issuer signature");
  const other = issuers.find((issuer) =>
    issuer !== c.issuer && issuer.algorithm === c.issuer.algorithm
  )!;
  assert.equal(
    await cert.verify({ publicKey: other.cert.publicKey, signatureOnly: true }),
    false,
    "another issuer's key also verifies: verify() proves nothing",
  );
}

function checkChain(c: Case, issued: IssuedCertificate): void {
  assert.equal(
    issued.chainPem,
    toPem("CERTIFICATE", issued.leafDer) + c.issuer.trust.issuerChainPem,
  );
  const blocks = pemBlocks(issued.chainPem);
  assert.equal(blocks.length, 2, "the leaf and the issuer");
  assert.equal(hex(blocks[0]), hex(issued.leafDer));
  assert.equal(hex(blocks[1]), hex(c.issuer.cert.rawData));
}

Deno.test(`workload certificates read back with @peculiar/x509 match their inputs (seed ${SEED}, ${CASES} cases)`, async () => {
  const serials = new Set<string>();
  const coverage = { notBeforeClamped: 0, notAfterClamped: 0, unclamped: 0, dnsNames: 0, async: 0 };
  for (let index = 0; index < CASES; index++) {
    const c = randomCase(new Random(SEED, index));
    await inCase(`case ${index}: ${describeCase(c)}`, async () => {
      const id = SpiffeId.forWorkload(c.trustDomain, c.namespace, c.appId);
      assert.equal(id.toString(), `spiffe://${c.trustDomain}/ns/${c.namespace}/${c.appId}`);
      const issued = await issue(c, id);
      const cert = new x509.X509Certificate(new Uint8Array(issued.leafDer));
      assertStrictDer(issued.leafDer);
      const serial = checkHeader(c, cert);
      assert.ok(!serials.has(serial), `serial ${serial} issued twice`);
      serials.add(serial);
      checkValidity(c, cert, issued);
      await checkExtensions(c, id, cert);
      await checkSignature(c, cert);
      checkChain(c, issued);
    });
    const now = c.now.getTime();
    const beforeClamped = now - c.skewMs < c.issuer.trust.issuerNotBefore.getTime();
    const afterClamped = now + c.ttlMs > c.issuer.trust.issuerNotAfter.getTime();
    if (beforeClamped) coverage.notBeforeClamped++;
    if (afterClamped) coverage.notAfterClamped++;
    if (!beforeClamped && !afterClamped) coverage.unclamped++;
    if (c.dnsNames.length > 0) coverage.dnsNames++;
    if (c.useAsync) coverage.async++;
  }
  // The generator must actually reach the interesting cases (5% each), or the property proves
  // little.
  for (const [what, count] of Object.entries(coverage)) {
    assert.ok(count >= CASES / 20, `only ${count} cases with ${what}: ${JSON.stringify(coverage)}`);
  }
});

// ---- negative properties: corrupted CSRs ----

interface CsrSample {
  key: WorkloadKey;
  der: Buffer;
  /** Where the key's SubjectPublicKeyInfo sits in `der`. */
  spki: { start: number; end: number };
  /** Where certificationRequestInfo (the signed part) sits in `der`. */
  info: { start: number; end: number };
  /** Where the signature value (the last bytes of the request) starts. */
  signatureStart: number;
}

const csrSamples: CsrSample[] = workloadKeys.map((key) => {
  const pem = csrPem(key.privateKey);
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s+/g, ""), "base64");
  const signatureLength = new x509.Pkcs10CertificateRequest(pem).signature.byteLength;
  const spkiStart = der.indexOf(key.spki);
  assert.ok(spkiStart > 0, `no SPKI in the CSR of ${key.name}`);
  const infoStart = der[1] < 0x80 ? 2 : 2 + (der[1] & 0x7f);
  return {
    key,
    der,
    spki: { start: spkiStart, end: spkiStart + key.spki.length },
    info: { start: infoStart, end: elementEnd(der, infoStart) },
    signatureStart: der.length - signatureLength,
  };
});

/** The error decodeCsr (or decodeCsrAsync) throws for `der`, or `{ accepted: <SPKI hex> }`. */
async function refusal(der: Uint8Array, useAsync: boolean): Promise<unknown> {
  const pem = toPem("CERTIFICATE REQUEST", der);
  try {
    const csr = useAsync ? await decodeCsrAsync(pem) : decodeCsr(pem);
    return { accepted: hex(csr.subjectPublicKeyInfo) };
  } catch (error) {
    return error;
  }
}

function assertCsrError(outcome: unknown): void {
  assert.ok(
    outcome instanceof CsrError,
    `expected a CsrError, got ${
      outcome instanceof Error ? outcome.stack : JSON.stringify(outcome)
    }`,
  );
}

/** A copy of `der` with the byte at `at` XORed with a random non-zero value. */
function flipped(rng: Random, der: Buffer, at: number): Buffer {
  const copy = Buffer.from(der);
  copy[at] ^= rng.int(1, 255);
  return copy;
}

/** Runs `MUTATIONS` random corruptions; `mutate` returns the corrupted DER and a description. */
async function forEachMutation(
  salt: number,
  mutate: (rng: Random, sample: CsrSample) => { der: Buffer; what: string },
  check: (outcome: unknown, sample: CsrSample, der: Buffer) => void = assertCsrError,
): Promise<void> {
  for (let index = 0; index < MUTATIONS; index++) {
    const rng = new Random(SEED ^ salt, index);
    const sample = rng.pick(csrSamples);
    const { der, what } = mutate(rng, sample);
    const useAsync = rng.chance(0.5);
    await inCase(`mutation ${index}: ${sample.key.name}, ${what}, async ${useAsync}`, async () => {
      check(await refusal(der, useAsync), sample, der);
    });
  }
}

Deno.test(`a CSR with a corrupted signature is refused with a CsrError (seed ${SEED})`, async () => {
  for (const sample of csrSamples) {
    assert.deepEqual(await refusal(sample.der, false), { accepted: hex(sample.key.spki) });
  }
  await forEachMutation(0x51, (rng, sample) => {
    const at = rng.int(sample.signatureStart, sample.der.length - 1);
    return { der: flipped(rng, sample.der, at), what: `signature byte ${at}` };
  });
});

Deno.test(`a CSR with a corrupted public key is refused with a CsrError (seed ${SEED})`, async () => {
  await forEachMutation(0x9c, (rng, sample) => {
    // Half of the time in the last 32 bytes: key material for every key type (EC y coordinate,
    // Ed25519 point, RSA modulus tail and exponent); otherwise anywhere, headers and OIDs too.
    const from = rng.chance(0.5) ? sample.spki.end - 32 : sample.spki.start;
    const at = rng.int(from, sample.spki.end - 1);
    return { der: flipped(rng, sample.der, at), what: `SPKI byte ${at}` };
  });
});

Deno.test(`a CSR with any corrupted byte is refused or yields the same key (seed ${SEED})`, async () => {
  await forEachMutation(0x3d, (rng, sample) => {
    const at = rng.int(0, sample.der.length - 1);
    return { der: flipped(rng, sample.der, at), what: `byte ${at}` };
  }, (outcome, sample, der) => {
    if (outcome instanceof Error) return assertCsrError(outcome);
    // Accepted: only bytes outside the signed certificationRequestInfo may have changed (the
    // signature AlgorithmIdentifier's parameters are not read), and the key is the original.
    assert.deepEqual(outcome, { accepted: hex(sample.key.spki) });
    const changed = der.findIndex((byte, i) => byte !== sample.der[i]);
    assert.ok(changed >= sample.info.end && changed < sample.signatureStart, `byte ${changed}`);
  });
});

Deno.test(`a CSR cut short or extended is refused with a CsrError (seed ${SEED})`, async () => {
  await forEachMutation(0x7e, (rng, sample) => {
    if (rng.chance(0.5)) {
      const length = rng.int(0, sample.der.length - 1);
      return { der: sample.der.subarray(0, length), what: `cut to ${length} bytes` };
    }
    const extra = Buffer.from(Array.from({ length: rng.int(1, 8) }, () => rng.int(0, 255)));
    return { der: Buffer.concat([sample.der, extra]), what: `extended by ${hex(extra)}` };
  });
});
