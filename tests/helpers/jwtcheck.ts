/**
 * Runs tests/dapr/jwtcheck, the Go checker of JWT-SVIDs (go-spiffe's `jwtsvid` against a bundle
 * built from a JWKS, as daprd parses tokens; `-jose` for go-jose alone), and its
 * `-dapr-issue` mode, which makes a key set with Dapr's own code.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { daprBinaries } from "./dapr_binaries.ts";
import { openssl } from "./openssl.ts";

/** What jwtcheck reports for a token it accepts. */
export interface JwtCheckReport {
  spiffeId: string;
  audience: string[];
  expiry: string;
  header: Record<string, string>;
  claims: Record<string, unknown>;
  checker: string;
}

/**
 * Checks `token` against the JWKS in the file `jwksFile` for `audience` in `trustDomain`;
 * resolves with jwtcheck's report, or rejects with its reason. `extra` adds flags (`-jose`).
 */
export async function jwtcheck(
  token: string,
  jwksFile: string,
  options: { trustDomain: string; audience: string; extra?: string[] },
): Promise<JwtCheckReport> {
  const { jwtcheck } = await daprBinaries();
  const child = new Deno.Command(jwtcheck, {
    args: [
      "-jwks",
      jwksFile,
      "-token",
      "-",
      "-trust-domain",
      options.trustDomain,
      "-audience",
      options.audience,
      ...(options.extra ?? []),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(token));
  await writer.close();
  const out = await child.output();
  const decoder = new TextDecoder();
  if (!out.success) throw new Error(decoder.decode(out.stderr).trim());
  return JSON.parse(decoder.decode(out.stdout));
}

/** A new RSA JWT key (openssl) and the jwks.json Dapr's code writes for it (`-dapr-issue`). */
export async function daprJwtKey(
  work: string,
  trustDomain: string,
): Promise<{ keyPem: string; jwksJson: string }> {
  const keyFile = join(work, `next-${crypto.randomUUID()}.key`);
  await openssl([
    "genpkey",
    "-algorithm",
    "RSA",
    "-pkeyopt",
    "rsa_keygen_bits:2048",
    "-out",
    keyFile,
  ]);
  const { jwtcheck } = await daprBinaries();
  const out = await new Deno.Command(jwtcheck, {
    args: ["-dapr-issue", keyFile, "-trust-domain", trustDomain, "-audience", trustDomain],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const { jwks } = JSON.parse(new TextDecoder().decode(out.stdout)) as { jwks: string };
  return { keyPem: await Deno.readTextFile(keyFile), jwksJson: jwks };
}
