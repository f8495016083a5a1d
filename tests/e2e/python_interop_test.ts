/**
 * Interoperability: a client that shares no code with sentry (Python's grpcio with a
 * hand-written protobuf codec, keys and CSRs from `cryptography`; see
 * tests/e2e/python/sentry_client.py) gets valid workload certificates for every key type and
 * Dapr's gRPC status codes for bad requests. Certificates are checked by the client itself
 * (SAN, key usages, public key) and by `openssl verify -x509_strict` here.
 *
 * Needs Debian's /usr/bin/python3 with `apt-get install python3-grpcio python3-cryptography`;
 * without them the test fails (it never skips).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { openssl, verifyChain } from "../helpers/openssl.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

const PYTHON = "/usr/bin/python3";
const CLIENT = fromFileUrl(new URL("./python/sentry_client.py", import.meta.url));
const INSTALL_HINT = "apt-get install python3-grpcio python3-cryptography";

/** Fails (never skips) unless Debian's python3 can import grpc and cryptography. */
async function requirePythonModules(): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(PYTHON, {
      args: ["-c", "import grpc, cryptography.x509"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(
      `cannot run ${PYTHON} (${(error as Error).message}); this test needs Debian's python3 ` +
        `with grpcio and cryptography: apt-get install python3 python3-grpcio python3-cryptography`,
    );
  }
  if (output.code !== 0) {
    throw new Error(
      `${PYTHON} lacks the modules this test needs; install them with: ${INSTALL_HINT}\n` +
        new TextDecoder().decode(output.stderr),
    );
  }
}

/** Runs the Python client and returns the JSON object it prints. */
async function runClient(args: string[]): Promise<Record<string, unknown>> {
  const output = await new Deno.Command(PYTHON, {
    args: [CLIENT, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const stdout = decoder.decode(output.stdout);
  const stderr = decoder.decode(output.stderr);
  if (output.code !== 0) {
    const hint = output.code === 3 ? `\n(install the modules with: ${INSTALL_HINT})` : "";
    throw new Error(
      `sentry_client.py ${args.join(" ")} exited with ${output.code}:\n${stderr}${stdout}${hint}`,
    );
  }
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

/** Unix seconds of openssl's `notAfter=...` for the first certificate in `pemFile`. */
async function opensslNotAfter(pemFile: string): Promise<number> {
  const line = (await openssl(["x509", "-noout", "-enddate", "-in", pemFile])).trim();
  const match = /^notAfter=(.+)$/.exec(line);
  assert.ok(match, `unexpected openssl output ${line}`);
  const millis = Date.parse(match[1]);
  assert.ok(!Number.isNaN(millis), `cannot parse openssl date ${match[1]}`);
  return millis / 1000;
}

interface Expected {
  code: string;
  /** Exact details, or a pattern they must match. */
  details: string | RegExp;
}

const NOT_ENABLED = "the requested validator is not enabled";
const ANY_REASON = /\S/;

/** What Dapr's sentry answers to each of the client's `error-cases` (INSECURE is the default). */
const EXPECTED_CASES: Record<string, Expected> = {
  validator_unknown: { code: "OK", details: "" },
  validator_kubernetes: { code: "INVALID_ARGUMENT", details: NOT_ENABLED },
  validator_jwks: { code: "INVALID_ARGUMENT", details: NOT_ENABLED },
  validator_out_of_range: { code: "INVALID_ARGUMENT", details: NOT_ENABLED },
  id_empty: { code: "PERMISSION_DENIED", details: /app.?id/i },
  id_with_dot: { code: "PERMISSION_DENIED", details: /app.?id/i },
  id_64_bytes: { code: "OK", details: "" },
  id_65_bytes: { code: "PERMISSION_DENIED", details: /64/ },
  id_with_slash: { code: "PERMISSION_DENIED", details: ANY_REASON },
  id_with_space: { code: "PERMISSION_DENIED", details: ANY_REASON },
  namespace_empty: { code: "PERMISSION_DENIED", details: /namespace/i },
  namespace_with_slash: { code: "PERMISSION_DENIED", details: ANY_REASON },
  namespace_with_space: { code: "PERMISSION_DENIED", details: ANY_REASON },
  trust_domain_uppercase: { code: "PERMISSION_DENIED", details: /trust domain/i },
  trust_domain_invalid_chars: { code: "PERMISSION_DENIED", details: /trust domain/i },
  csr_empty: { code: "PERMISSION_DENIED", details: /CSR/ },
  csr_not_pem: { code: "INVALID_ARGUMENT", details: "invalid certificate signing request" },
  csr_wrong_pem_type: { code: "INVALID_ARGUMENT", details: "invalid certificate signing request" },
  csr_garbage_der: {
    code: "INVALID_ARGUMENT",
    details: /^failed to parse certificate signing request/,
  },
  csr_legacy_certificate_label: { code: "OK", details: "" },
  csr_bad_signature_ec_p256: { code: "INVALID_ARGUMENT", details: "invalid signature" },
  csr_bad_signature_ed25519: { code: "INVALID_ARGUMENT", details: "invalid signature" },
  csr_bad_signature_rsa_2048: { code: "INVALID_ARGUMENT", details: "invalid signature" },
  csr_rsa_1024: { code: "INVALID_ARGUMENT", details: /rsa|key/i },
  request_60_kib: { code: "INVALID_ARGUMENT", details: "invalid certificate signing request" },
  request_70_kib: { code: "RESOURCE_EXHAUSTED", details: ANY_REASON },
};

Deno.test("a Python gRPC client sharing no code with sentry interoperates", async (t) => {
  await requirePythonModules();

  const work = await tempDir("sentry-python-");
  const credentials = await tempDir("sentry-python-creds-");
  const sentry = await startSentry({ dir: credentials, env: { NAMESPACE: "dapr-system" } });
  const anchorsPath = join(sentry.dir, "ca.crt");
  const anchors = await Deno.readTextFile(anchorsPath);
  const common = ["--port", String(sentry.grpcPort), "--anchors", anchorsPath, "--out-dir", work];

  /** Signs one CSR through the Python client and checks everything about the result. */
  async function signAndCheck(
    keyType: string,
    trustDomain: string,
    expectedSpiffeId: string,
    label: string,
  ): Promise<void> {
    const before = Math.floor(Date.now() / 1000);
    const result = await runClient([
      "sign",
      ...common,
      "--key-type",
      keyType,
      "--id",
      "myapp",
      "--namespace",
      "default",
      `--trust-domain=${trustDomain}`,
      "--label",
      label,
    ]);
    assert.equal(result.code, "OK", `signing failed: ${result.code} ${result.details}`);
    assert.equal(result.details, "");

    // Response shape: leaf + issuer, one trust-anchor element equal to ca.crt, no JWT.
    assert.equal(result.cert_count, 2, "leaf followed by the issuer");
    assert.equal(result.trust_chain_elements, 1);
    const returnedAnchors = await Deno.readTextFile(result.anchors_file as string);
    assert.equal(returnedAnchors.trim(), anchors.trim());
    assert.deepEqual(result.other_response_fields, []);

    // The leaf, as cryptography sees it.
    assert.equal(result.leaf_subject, "");
    assert.equal(result.san_exactly_one_uri, true, `SAN ${JSON.stringify(result.san_names)}`);
    assert.deepEqual(result.san_names, [["uri", expectedSpiffeId]]);
    assert.deepEqual(result.san_uris, [expectedSpiffeId]);
    assert.equal(result.san_critical, true, "SAN is critical with an empty subject");
    assert.deepEqual(result.key_usage, ["digital_signature"]);
    assert.equal(result.key_usage_digital_signature_only, true);
    assert.equal(result.key_usage_critical, true);
    assert.deepEqual(result.extended_key_usage, ["clientAuth", "serverAuth"]);
    assert.equal(result.is_ca, false);
    assert.equal(result.public_key_matches_csr, true, "the leaf certifies the CSR's key");

    // valid_until is the leaf's NotAfter (as cryptography and openssl read it), about 24h out.
    const notAfter = result.leaf_not_after as number;
    assert.equal(result.valid_until_seconds, notAfter);
    assert.equal(result.valid_until_nanos, 0);
    const chainFile = result.chain_file as string;
    assert.equal(await opensslNotAfter(chainFile), notAfter);
    const lifetime = notAfter - before;
    assert.ok(Math.abs(lifetime - 24 * 3600) < 120, `lifetime ${lifetime}s`);
    assert.ok((result.leaf_not_before as number) <= before, "NotBefore is not in the future");

    // openssl -x509_strict accepts the chain for both TLS roles against sentry's ca.crt.
    const chainPem = await Deno.readTextFile(chainFile);
    await verifyChain(work, anchors, chainPem, "sslserver");
    await verifyChain(work, anchors, chainPem, "sslclient");
  }

  try {
    for (const keyType of ["ec-p256", "ed25519", "rsa-2048"]) {
      await t.step(`signs a ${keyType} CSR`, async () => {
        await signAndCheck(
          keyType,
          "cluster.local",
          "spiffe://cluster.local/ns/default/myapp",
          "sign",
        );
      });
    }

    await t.step("an empty trust domain means 'public'", async () => {
      await signAndCheck("ec-p256", "", "spiffe://public/ns/default/myapp", "public");
    });

    await t.step("bad requests get Dapr's status codes", async () => {
      const results = await runClient(["error-cases", ...common]) as Record<
        string,
        { code: string; details: string }
      >;
      assert.deepEqual(
        Object.keys(results).sort(),
        Object.keys(EXPECTED_CASES).sort(),
        "every case the client sends has an expectation here",
      );
      const mismatches: string[] = [];
      for (const [name, expected] of Object.entries(EXPECTED_CASES)) {
        const { code, details } = results[name];
        const detailsOk = typeof expected.details === "string"
          ? details === expected.details
          : expected.details.test(details);
        if (code !== expected.code || !detailsOk) {
          const want = typeof expected.details === "string"
            ? JSON.stringify(expected.details)
            : String(expected.details);
          mismatches.push(
            `${name}: got ${code} ${JSON.stringify(details)}, want ${expected.code} ${want}`,
          );
        }
      }
      assert.deepEqual(mismatches, [], `status mismatches:\n${mismatches.join("\n")}`);
    });
  } finally {
    assert.equal(await sentry.stop(), 0, "graceful stop exits 0");
    await Deno.remove(work, { recursive: true });
    await Deno.remove(credentials, { recursive: true });
  }
});
