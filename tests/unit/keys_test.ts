/**
 * publicKeyFromSpki: the JWK fast path gives the same key as the DER import for every key
 * type, rejects invalid points, and falls back to DER for shapes it does not handle.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { publicKeyFromSpki } from "../../src/x509/keys.ts";
import { openssl } from "../helpers/openssl.ts";

function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" }) as Buffer;
}

Deno.test("the imported key is the SPKI's key, for every accepted key type", () => {
  const keys = [
    generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey,
    generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey,
    generateKeyPairSync("ed25519").publicKey,
    generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey,
  ];
  for (const key of keys) {
    const spki = spkiOf(key);
    const imported = publicKeyFromSpki(spki);
    assert.ok(imported.equals(createPublicKey({ key: spki, format: "der", type: "spki" })));
    assert.ok(Buffer.from(imported.export({ type: "spki", format: "der" })).equals(spki));
  }
});

Deno.test("a point that is not on the curve is refused", () => {
  const spki = spkiOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
  const broken = Buffer.from(spki);
  broken[broken.length - 1] ^= 0x01; // change y: off the curve
  assert.throws(() => publicKeyFromSpki(broken));
});

Deno.test("a compressed EC point falls back to the DER import", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-keys-test-" });
  try {
    const keyPath = `${dir}/k.pem`;
    await openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      keyPath,
    ]);
    const compressed = await openssl([
      "ec",
      "-in",
      keyPath,
      "-pubout",
      "-conv_form",
      "compressed",
      "-outform",
      "DER",
      "-out",
      `${dir}/c.der`,
    ]);
    assert.equal(compressed, "");
    const spki = await Deno.readFile(`${dir}/c.der`);
    assert.equal(
      spki[spki.length - 33] === 0x02 || spki[spki.length - 33] === 0x03,
      true,
      "compressed point",
    );
    const imported = publicKeyFromSpki(spki);
    const expected = createPublicKey({ key: await Deno.readTextFile(keyPath) });
    assert.ok(imported.equals(expected));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
