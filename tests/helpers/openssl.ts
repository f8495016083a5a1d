/**
 * The `openssl` CLI as an independent reference: key and CSR generation, certificate
 * creation for bring-your-own bundles, and strict verification of what sentry issues.
 *
 * @module
 */
import { join } from "node:path";

/** Runs openssl with `args`; throws with its stderr when it fails. */
export async function openssl(args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  if (output.code !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed: ${decoder.decode(output.stderr)}`);
  }
  return decoder.decode(output.stdout);
}

/** Key types the tests exercise, with the openssl options that make them. */
export const KEY_TYPES = {
  "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  "ed25519": ["-algorithm", "ED25519"],
  "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
} as const;

/** One of {@link KEY_TYPES}. */
export type KeyType = keyof typeof KEY_TYPES;

/** Generates a private key (PKCS#8 PEM) of the given type. */
export async function generateKey(type: KeyType | string[]): Promise<string> {
  const options = Array.isArray(type) ? type : [...KEY_TYPES[type]];
  return await openssl(["genpkey", ...options]);
}

/** Writes `key` to a file in `dir` and returns a CSR with an empty subject, as daprd sends. */
export async function makeCsr(dir: string, keyPem: string, subject = "/"): Promise<string> {
  const keyPath = join(dir, `key-${crypto.randomUUID()}.pem`);
  await Deno.writeTextFile(keyPath, keyPem);
  return await openssl(["req", "-new", "-key", keyPath, "-subj", subject]);
}

/**
 * `openssl verify -x509_strict` of `leafChainPem` (leaf + intermediates) against `anchorsPem`
 * for a purpose (`sslserver` or `sslclient`). Returns openssl's output; throws on failure.
 */
export async function verifyChain(
  dir: string,
  anchorsPem: string,
  leafChainPem: string,
  purpose: "sslserver" | "sslclient",
): Promise<string> {
  const blocks =
    leafChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
  const id = crypto.randomUUID();
  const anchors = join(dir, `anchors-${id}.pem`);
  const leaf = join(dir, `leaf-${id}.pem`);
  const untrusted = join(dir, `untrusted-${id}.pem`);
  await Deno.writeTextFile(anchors, anchorsPem);
  await Deno.writeTextFile(leaf, blocks[0] ?? "");
  await Deno.writeTextFile(untrusted, blocks.slice(1).join(""));
  const args = ["verify", "-x509_strict", "-purpose", purpose, "-CAfile", anchors];
  if (blocks.length > 1) args.push("-untrusted", untrusted);
  return await openssl([...args, leaf]);
}
