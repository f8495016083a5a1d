/**
 * decodeCsr against hostile requests (issue 17): keys that cost more than they should (huge RSA
 * exponents or moduli) and shapes Go's x509.ParseCertificateRequest or CheckSignature refuses
 * (explicit curves, compressed points, parameters where none belong, non-minimal DER, trailing
 * data, a signature algorithm that does not match the key). Each is refused before the
 * signature is checked, with a message naming the check. The requests are built by hand with
 * our DER encoders and signed with node:crypto, or made by openssl where it can.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  generatePrimeSync,
  type KeyObject,
  sign,
} from "node:crypto";
import { CsrError, decodeCsr } from "../../src/x509/csr.ts";
import * as der from "../../src/x509/der.ts";
import { generateKey, makeCsr } from "../helpers/openssl.ts";

const work = await Deno.makeTempDir({ prefix: "sentry-csr-hostile-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

const ECDSA_SHA256 = der.sequence(der.oid("1.2.840.10045.4.3.2"));
const RSA_SHA256 = der.sequence(der.oid("1.2.840.113549.1.1.11"), der.NULL);
const ED25519 = der.sequence(der.oid("1.3.101.112"));

function toPem(derBytes: Uint8Array): string {
  const lines = Buffer.from(derBytes).toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE REQUEST-----\n${
    lines.join("\n")
  }\n-----END CERTIFICATE REQUEST-----\n`;
}

function pemBody(pem: string): Buffer {
  const match = /-----BEGIN [A-Z ]+-----([\s\S]*?)-----END/.exec(pem);
  assert.ok(match, "no PEM block");
  return Buffer.from(match[1].replace(/\s+/g, ""), "base64");
}

/** The CertificationRequestInfo daprd sends: version 0, empty subject, the key, no attributes. */
function requestInfo(spki: Uint8Array, version = der.smallInteger(0)): Buffer {
  return der.sequence(version, der.sequence(), spki, Buffer.from([0xa0, 0x00]));
}

/** A CSR over `info` signed by `key` (hash for node:crypto, null for Ed25519). */
function signedCsr(
  info: Uint8Array,
  key: KeyObject,
  algorithm: Uint8Array,
  hash: string | null = "sha256",
): Buffer {
  return der.sequence(info, algorithm, der.bitString(sign(hash, info, key)));
}

function spkiOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ type: "spki", format: "der" }) as Buffer;
}

function rsaSpki(modulus: Uint8Array, exponent: Uint8Array): Buffer {
  return der.sequence(
    der.sequence(der.oid("1.2.840.113549.1.1.1"), der.NULL),
    der.bitString(der.sequence(der.unsignedInteger(modulus), der.unsignedInteger(exponent))),
  );
}

function bigToBytes(value: bigint): Buffer {
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, "hex");
}

function modInverse(a: bigint, m: bigint): bigint {
  let [oldR, r] = [a % m, m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  if (oldR !== 1n) throw new Error("not invertible");
  return ((oldS % m) + m) % m;
}

/** base^exponent mod modulus. */
function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
  }
  return result;
}

/** DigestInfo prefix of SHA-256 for PKCS#1 v1.5 signatures. */
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

/**
 * A real RSA-2048 key pair with the public exponent `pick()` returns (node:crypto, Deno's
 * included, and openssl make or import only small ones): its SPKI and a PKCS#1 v1.5 SHA-256
 * signer, computed with BigInt.
 */
function rsaKeyWithExponent(
  pick: () => bigint,
): { spki: Buffer; sign: (data: Uint8Array) => Buffer } {
  for (;;) {
    const p = generatePrimeSync(1024, { bigint: true });
    const q = generatePrimeSync(1024, { bigint: true });
    const n = p * q;
    const e = pick();
    let d: bigint;
    try {
      d = modInverse(e, (p - 1n) * (q - 1n));
    } catch {
      continue;
    }
    return {
      spki: rsaSpki(bigToBytes(n), bigToBytes(e)),
      sign(data) {
        const digest = createHash("sha256").update(data).digest();
        const t = Buffer.concat([SHA256_DIGEST_INFO, digest]);
        const em = Buffer.concat([
          Buffer.from([0, 1]),
          Buffer.alloc(256 - t.length - 3, 0xff),
          Buffer.from([0]),
          t,
        ]);
        const s = bigToBytes(modPow(BigInt(`0x${em.toString("hex")}`), d, n));
        return Buffer.concat([Buffer.alloc(256 - s.length), s]);
      },
    };
  }
}

function randomOdd(bits: number): bigint {
  const bytes = crypto.getRandomValues(new Uint8Array(Math.ceil(bits / 8)));
  let value = BigInt(`0x${Buffer.from(bytes).toString("hex")}`);
  value &= (1n << BigInt(bits)) - 1n;
  return value | (1n << BigInt(bits - 1)) | 1n;
}

function refused(csr: Uint8Array | string, pattern: RegExp) {
  assert.throws(
    () => decodeCsr(typeof csr === "string" ? csr : toPem(csr)),
    (error: Error) => {
      assert.ok(error instanceof CsrError, `not a CsrError: ${error}`);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const ed = generateKeyPairSync("ed25519").privateKey;
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;

Deno.test("sanity: the hand-built requests verify when nothing is wrong", () => {
  for (
    const [key, algorithm, hash] of [
      [ec, ECDSA_SHA256, "sha256"],
      [ed, ED25519, null],
      [rsa, RSA_SHA256, "sha256"],
    ] as const
  ) {
    const spki = spkiOf(key);
    const csr = decodeCsr(toPem(signedCsr(requestInfo(spki), key, algorithm, hash)));
    assert.deepEqual(csr.subjectPublicKeyInfo, spki);
  }
});

Deno.test("RSA: a 3,071-bit public exponent is refused before the signature check", () => {
  const key = rsaKeyWithExponent(() => randomOdd(3071));
  const info = requestInfo(key.spki);
  const csr = der.sequence(info, RSA_SHA256, der.bitString(key.sign(info)));
  refused(csr, /^unsupported public key rsa-2048 .*public exponent .*3071 bits/);
});

Deno.test("RSA: exponents Go refuses (even, 1, over 2^31-1) are refused; 3 and 2^31-1 accepted", () => {
  const modulus = bigToBytes(randomOdd(2048));
  for (const e of [1n, 2n, 65536n, 2n ** 31n + 1n, 2n ** 32n + 1n]) {
    refused(
      signedCsr(requestInfo(rsaSpki(modulus, bigToBytes(e))), rsa, RSA_SHA256),
      /^unsupported public key rsa-2048 .*public exponent must be odd/,
    );
  }
  for (const e of [3, 2 ** 31 - 1]) {
    const key = generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: e }).privateKey;
    const spki = spkiOf(key);
    assert.deepEqual(
      decodeCsr(toPem(signedCsr(requestInfo(spki), key, RSA_SHA256))).subjectPublicKeyInfo,
      spki,
    );
  }
});

Deno.test("RSA: a key with e = 2^32+15 (valid, signed) is refused", () => {
  const key = rsaKeyWithExponent(() => 2n ** 32n + 15n);
  const info = requestInfo(key.spki);
  refused(
    der.sequence(info, RSA_SHA256, der.bitString(key.sign(info))),
    /^unsupported public key rsa-2048 .*public exponent must be odd/,
  );
});

Deno.test("RSA: a modulus over 8192 bits, or an even one, is refused", () => {
  const e = bigToBytes(65537n);
  refused(
    signedCsr(requestInfo(rsaSpki(bigToBytes(randomOdd(16384)), e)), rsa, RSA_SHA256),
    /^unsupported public key rsa-16384 .*RSA modulus over 8192 bits/,
  );
  refused(
    signedCsr(requestInfo(rsaSpki(bigToBytes(randomOdd(2048) - 1n), e)), rsa, RSA_SHA256),
    /^unsupported public key rsa-2048 .*RSA modulus is even/,
  );
});

Deno.test("RSA: parameters other than NULL, or trailing bytes after the key, are refused", () => {
  const spki = spkiOf(rsa);
  const root = der.readElement(spki);
  const [, bits] = der.children(spki, root);
  const keyBits = der.contentOf(spki, bits).subarray(1);
  const noParameters = der.sequence(
    der.sequence(der.oid("1.2.840.113549.1.1.1")),
    der.bitString(keyBits),
  );
  refused(
    signedCsr(requestInfo(noParameters), rsa, RSA_SHA256),
    /^failed to parse certificate signing request: RSA key missing NULL parameters/,
  );
  const trailing = der.sequence(
    der.sequence(der.oid("1.2.840.113549.1.1.1"), der.NULL),
    der.bitString(Buffer.concat([keyBits, Buffer.from([0])])),
  );
  refused(
    signedCsr(requestInfo(trailing), rsa, RSA_SHA256),
    /^failed to parse certificate signing request: trailing data after the RSA public key/,
  );
});

Deno.test("EC: explicit curve parameters are refused (openssl ec_param_enc:explicit)", async () => {
  const keyPem = await generateKey([
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-pkeyopt",
    "ec_param_enc:explicit",
  ]);
  refused(
    await makeCsr(work, keyPem),
    /^failed to parse certificate signing request: explicit EC curve parameters/,
  );
});

Deno.test("EC: a compressed point is refused (Go parses uncompressed points only)", () => {
  const jwk = createPublicKey(ec).export({ format: "jwk" });
  const x = Buffer.from(jwk.x!, "base64url");
  const y = Buffer.from(jwk.y!, "base64url");
  const compressed = Buffer.concat([Buffer.from([2 + (y[y.length - 1] & 1)]), x]);
  const spki = der.sequence(
    der.sequence(der.oid("1.2.840.10045.2.1"), der.oid("1.2.840.10045.3.1.7")),
    der.bitString(compressed),
  );
  refused(
    signedCsr(requestInfo(spki), ec, ECDSA_SHA256),
    /^failed to parse certificate signing request: EC point is not in uncompressed form/,
  );
});

Deno.test("Ed25519: parameters in the key's or the signature's algorithm are refused", () => {
  const spki = spkiOf(ed);
  const root = der.readElement(spki);
  const [, bits] = der.children(spki, root);
  const withNull = der.sequence(
    der.sequence(der.oid("1.3.101.112"), der.NULL),
    der.bytesOf(spki, bits),
  );
  refused(
    signedCsr(requestInfo(withNull), ed, ED25519, null),
    /^failed to parse certificate signing request: Ed25519 key encoded with illegal parameters/,
  );
  refused(
    signedCsr(requestInfo(spki), ed, der.sequence(der.oid("1.3.101.112"), der.NULL), null),
    /^failed to parse certificate signing request: signature algorithm Ed25519 with illegal/,
  );
});

Deno.test("a signature algorithm that does not match the key is refused", () => {
  // node:crypto would verify both: the hash is all it takes from the algorithm.
  refused(
    signedCsr(requestInfo(spkiOf(rsa)), rsa, ECDSA_SHA256),
    /^invalid signature: signature algorithm ecdsa-with-SHA256 does not match the rsa/,
  );
  refused(
    signedCsr(requestInfo(spkiOf(ec)), ec, RSA_SHA256),
    /^invalid signature: signature algorithm sha256WithRSAEncryption does not match the ec/,
  );
  refused(
    signedCsr(requestInfo(spkiOf(ed)), ed, ECDSA_SHA256, null),
    /^invalid signature: signature algorithm ecdsa-with-SHA256 does not match the ed25519/,
  );
});

Deno.test("non-minimal DER is refused: lengths and INTEGERs, signed or not", () => {
  const valid = signedCsr(requestInfo(spkiOf(ec)), ec, ECDSA_SHA256);
  // The outer length (two octets for an EC request) with a redundant leading zero octet.
  assert.equal(valid[1], 0x81);
  const longer = Buffer.concat([Buffer.from([0x30, 0x82, 0x00]), valid.subarray(2)]);
  refused(longer, /^failed to parse certificate signing request: non-minimal length/);
  // A short length written in long form, inside the signed part.
  const spki = spkiOf(ec);
  const longForm = Buffer.concat([Buffer.from([0x30, 0x81, spki[1]]), spki.subarray(2)]);
  const info = der.sequence(der.smallInteger(0), der.sequence(), longForm, Buffer.from([0xa0, 0]));
  refused(
    signedCsr(info, ec, ECDSA_SHA256),
    /^failed to parse certificate signing request: non-minimal length/,
  );
  // The version as 02 02 00 00.
  const version = Buffer.from([0x02, 0x02, 0x00, 0x00]);
  refused(
    signedCsr(requestInfo(spki, version), ec, ECDSA_SHA256),
    /^failed to parse certificate signing request: non-minimal INTEGER/,
  );
});

Deno.test("trailing data inside the request is refused", () => {
  const spki = spkiOf(ec);
  // An extra element after the key's BIT STRING, signed.
  const extra = Buffer.concat([spki.subarray(0, 2), spki.subarray(2), der.NULL]);
  extra[1] += der.NULL.length;
  refused(
    signedCsr(requestInfo(extra), ec, ECDSA_SHA256),
    /^failed to parse certificate signing request: malformed subjectPublicKeyInfo/,
  );
  // An extra element in the signature algorithm (outside the signed part).
  const info = requestInfo(spki);
  const algorithm = der.sequence(der.oid("1.2.840.10045.4.3.2"), der.NULL, der.NULL);
  refused(
    der.sequence(info, algorithm, der.bitString(sign("sha256", info, ec))),
    /^failed to parse certificate signing request: malformed signature algorithm/,
  );
  // Bytes after the signature's BIT STRING inside the outer SEQUENCE.
  const csr = signedCsr(info, ec, ECDSA_SHA256);
  refused(
    der.sequence(der.contentOf(csr, der.readElement(csr)), Buffer.from([0x05, 0x00])),
    /^failed to parse certificate signing request: a request has exactly three parts/,
  );
  // The openssl-made request itself stays accepted (checked in csr_test.ts too).
  assert.ok(pemBody(toPem(csr)).equals(csr));
});
