/**
 * Dapr Configuration documents (docs/compatibility.md#configuration): spec.mtls durations with Go syntax, defaults,
 * environment expansion, token validators, and messages that name the source and the field.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ConfigurationError,
  DEFAULT_SETTINGS,
  expandEnv,
  parseConfiguration,
} from "../../src/config/configuration.ts";
import { FileSettingsSource } from "../../src/config/settings-source.ts";

const HOUR = 3_600_000;
const MINUTE = 60_000;
const SOURCE = "configuration file /etc/dapr/config.yaml";

/** The example of Dapr's "Setup & configure mTLS certificates" documentation. */
const DAPR_DOC_EXAMPLE = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
  namespace: default
spec:
  mtls:
    enabled: true
    workloadCertTTL: "24h"
    allowedClockSkew: "15m"
`;

function withMtls(mtlsLines: string): string {
  return `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
${mtlsLines.split("\n").map((line) => `    ${line}`).join("\n")}
`;
}

/** Asserts that parsing `text` fails with a ConfigurationError whose message matches all `patterns`. */
function assertRejected(text: string, ...patterns: RegExp[]): void {
  assert.throws(() => parseConfiguration(text, SOURCE), (error: Error) => {
    assert.ok(error instanceof ConfigurationError, `not a ConfigurationError: ${error}`);
    assert.ok(error.message.startsWith(`${SOURCE}:`), `source not named: ${error.message}`);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("an empty Configuration file means the defaults, as in Dapr", () => {
  for (const text of ["", "\n   \n", "# only a comment\n", "---\n"]) {
    assert.deepEqual(parseConfiguration(text, SOURCE), DEFAULT_SETTINGS, JSON.stringify(text));
  }
});

Deno.test("Dapr's documented Configuration example parses to its values", () => {
  const settings = parseConfiguration(DAPR_DOC_EXAMPLE, SOURCE);
  assert.equal(settings.workloadCertTtlMs, 24 * HOUR);
  assert.equal(settings.allowedClockSkewMs, 15 * MINUTE);
  assert.deepEqual(settings.tokenValidators, []);
  assert.equal(settings.controlPlaneTrustDomain, undefined);
});

Deno.test("non-default durations are read with Go syntax", () => {
  const settings = parseConfiguration(
    withMtls(`enabled: true\nworkloadCertTTL: 25s\nallowedClockSkew: 1m30s`),
    SOURCE,
  );
  assert.equal(settings.workloadCertTtlMs, 25_000);
  assert.equal(settings.allowedClockSkewMs, 90_000);
  assert.equal(
    parseConfiguration(withMtls(`workloadCertTTL: "2h45m"`), SOURCE).workloadCertTtlMs,
    2 * HOUR + 45 * MINUTE,
  );
  assert.equal(
    parseConfiguration(withMtls(`workloadCertTTL: 1.5h`), SOURCE).workloadCertTtlMs,
    1.5 * HOUR,
  );
  assert.equal(
    parseConfiguration(withMtls(`workloadCertTTL: 300ms`), SOURCE).workloadCertTtlMs,
    300,
  );
});

Deno.test("defaults apply when spec.mtls or its fields are absent", () => {
  const documents = [
    `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\n`,
    `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  tracing:\n    samplingRate: "1"\n`,
    withMtls(`enabled: true`),
    withMtls(`workloadCertTTL: ""\nallowedClockSkew: ""`),
    withMtls(`workloadCertTTL:\nallowedClockSkew:`),
    `kind: Configuration\nspec: {}\n`,
    `{"kind": "Configuration", "spec": {"mtls": {}}}`,
  ];
  for (const text of documents) {
    const settings = parseConfiguration(text, SOURCE);
    assert.equal(settings.workloadCertTtlMs, 24 * HOUR, text);
    assert.equal(settings.allowedClockSkewMs, 15 * MINUTE, text);
    assert.deepEqual(settings.tokenValidators, [], text);
  }
  assert.equal(DEFAULT_SETTINGS.workloadCertTtlMs, 24 * HOUR);
  assert.equal(DEFAULT_SETTINGS.allowedClockSkewMs, 15 * MINUTE);
});

Deno.test("a JSON document (the Kubernetes resource form) parses too", () => {
  const settings = parseConfiguration(
    JSON.stringify({
      apiVersion: "dapr.io/v1alpha1",
      kind: "Configuration",
      metadata: { name: "daprsystem", namespace: "dapr-system" },
      spec: { mtls: { enabled: true, workloadCertTTL: "1h", allowedClockSkew: "2m" } },
    }),
    SOURCE,
  );
  assert.equal(settings.workloadCertTtlMs, HOUR);
  assert.equal(settings.allowedClockSkewMs, 2 * MINUTE);
});

Deno.test("allowedClockSkew may be zero; workloadCertTTL may not", () => {
  assert.equal(
    parseConfiguration(withMtls(`allowedClockSkew: "0"`), SOURCE).allowedClockSkewMs,
    0,
  );
  assert.equal(
    parseConfiguration(withMtls(`allowedClockSkew: 0s`), SOURCE).allowedClockSkewMs,
    0,
  );
  assertRejected(withMtls(`workloadCertTTL: "0"`), /spec\.mtls\.workloadCertTTL/, /positive/);
  assertRejected(withMtls(`workloadCertTTL: 0s`), /spec\.mtls\.workloadCertTTL/, /positive/);
});

Deno.test("environment variables are expanded, $VAR and ${VAR}", () => {
  const text = withMtls(`workloadCertTTL: $CERT_TTL\nallowedClockSkew: "\${CLOCK_SKEW}"`);
  const settings = parseConfiguration(text, SOURCE, { CERT_TTL: "25s", CLOCK_SKEW: "2m" });
  assert.equal(settings.workloadCertTtlMs, 25_000);
  assert.equal(settings.allowedClockSkewMs, 2 * MINUTE);
  // Unset variables expand to nothing, which leaves the default in place.
  const unset = parseConfiguration(text, SOURCE, {});
  assert.equal(unset.workloadCertTtlMs, 24 * HOUR);
  assert.equal(unset.allowedClockSkewMs, 15 * MINUTE);
  // Expansion happens before YAML parsing, anywhere in the document.
  const trustDomain = parseConfiguration(
    withMtls(`controlPlaneTrustDomain: \${TD}.local`),
    SOURCE,
    { TD: "cluster" },
  );
  assert.equal(trustDomain.controlPlaneTrustDomain, "cluster.local");
});

Deno.test("expandEnv follows os.ExpandEnv for the forms Dapr documents", () => {
  const env = { A: "1", B_2: "two", EMPTY: "" };
  assert.equal(expandEnv("$A-${B_2}-$EMPTY-$MISSING-${MISSING}", env), "1-two---");
  assert.equal(expandEnv("x$A$A", env), "x11");
  assert.equal(expandEnv("no variables", env), "no variables");
  assert.equal(expandEnv("$Ab", env), ""); // the name runs to the end of the identifier
});

Deno.test("token validators are read with their options", () => {
  const settings = parseConfiguration(
    withMtls(`tokenValidators:
  - name: JWKS
    options:
      minRefreshInterval: 2m
      requestTimeout: 1m
      source: "https://localhost:1050/.well-known/jwks.json"`),
    SOURCE,
  );
  assert.deepEqual(settings.tokenValidators, [
    {
      name: "jwks",
      options: {
        minRefreshInterval: "2m",
        requestTimeout: "1m",
        source: "https://localhost:1050/.well-known/jwks.json",
      },
    },
  ]);
});

Deno.test("the built-in validators cannot be listed, as in Dapr", () => {
  for (const name of ["insecure", "kubernetes", "Kubernetes"]) {
    assertRejected(
      withMtls(
        `tokenValidators:\n  - name: jwks\n    options:\n      source: x\n  - name: ${name}`,
      ),
      /spec\.mtls\.tokenValidators\[1\]/,
      /the built-in 'kubernetes' and 'insecure' validators cannot be configured manually/,
    );
  }
});

Deno.test("the settings snapshot is immutable", () => {
  const settings = parseConfiguration(
    withMtls(`tokenValidators:\n  - name: jwks\n    options:\n      source: x`),
    SOURCE,
  );
  assert.ok(Object.isFrozen(settings));
  assert.ok(Object.isFrozen(settings.tokenValidators));
  assert.ok(Object.isFrozen(settings.tokenValidators[0]));
  assert.ok(Object.isFrozen(settings.tokenValidators[0].options));
  assert.ok(Object.isFrozen(DEFAULT_SETTINGS));
});

Deno.test("controlPlaneTrustDomain is kept for information", () => {
  const settings = parseConfiguration(withMtls(`controlPlaneTrustDomain: cluster.local`), SOURCE);
  assert.equal(settings.controlPlaneTrustDomain, "cluster.local");
});

Deno.test("errors name the source and the field", async (t) => {
  await t.step("bad YAML", () => {
    assertRejected(`spec:\n  mtls: [\n`, /not valid YAML/);
    assertRejected(`spec:\n\tmtls: {}\n`, /not valid YAML/);
  });
  await t.step("bad duration", () => {
    assertRejected(
      withMtls(`workloadCertTTL: 1d`),
      /spec\.mtls\.workloadCertTTL/,
      /invalid duration "1d"/,
    );
    assertRejected(withMtls(`workloadCertTTL: "24"`), /spec\.mtls\.workloadCertTTL/, /"24"/);
    assertRejected(
      withMtls(`allowedClockSkew: fifteen minutes`),
      /spec\.mtls\.allowedClockSkew/,
      /invalid duration/,
    );
  });
  await t.step("a duration that is not a string", () => {
    assertRejected(withMtls(`workloadCertTTL: 24`), /spec\.mtls\.workloadCertTTL/, /24/);
    assertRejected(withMtls(`allowedClockSkew: [1m]`), /spec\.mtls\.allowedClockSkew/);
  });
  await t.step("negative TTL", () => {
    assertRejected(
      withMtls(`workloadCertTTL: -1h`),
      /spec\.mtls\.workloadCertTTL: must be positive/,
      /"-1h"/,
    );
  });
  await t.step("negative clock skew", () => {
    assertRejected(withMtls(`allowedClockSkew: -1m`), /spec\.mtls\.allowedClockSkew/, /"-1m"/);
  });
  await t.step("zero TTL", () => {
    assertRejected(withMtls(`workloadCertTTL: 0h`), /spec\.mtls\.workloadCertTTL/, /positive/);
  });
  await t.step("wrong kind", () => {
    assertRejected(
      `apiVersion: dapr.io/v1alpha1\nkind: Component\nspec:\n  type: state.redis\n`,
      /kind is "Component"/,
      /expected "Configuration"/,
    );
  });
  await t.step("unknown validator name", () => {
    assertRejected(
      withMtls(`tokenValidators:\n  - name: jwks\n  - name: oidc`),
      /spec\.mtls\.tokenValidators\[1\]/,
      /unknown token validator "oidc"/,
    );
  });
  await t.step("validator without a name", () => {
    assertRejected(
      withMtls(`tokenValidators:\n  - options: {}`),
      /spec\.mtls\.tokenValidators\[0\] must have a name/,
    );
    assertRejected(withMtls(`tokenValidators:\n  - jwks`), /spec\.mtls\.tokenValidators\[0\]/);
  });
  await t.step("validator options not a mapping", () => {
    assertRejected(
      withMtls(`tokenValidators:\n  - name: jwks\n    options: [a, b]`),
      /spec\.mtls\.tokenValidators\[0\]\.options must be a mapping/,
    );
  });
  await t.step("tokenValidators not a list", () => {
    assertRejected(withMtls(`tokenValidators: jwks`), /spec\.mtls\.tokenValidators must be a list/);
    assertRejected(
      withMtls(`tokenValidators:\n  name: jwks`),
      /spec\.mtls\.tokenValidators must be a list/,
    );
  });
  await t.step("not a mapping", () => {
    assertRejected("- a\n- b\n", /Configuration object/);
    assertRejected("just a string\n", /Configuration object/);
    assertRejected(`kind: Configuration\nspec: [1]\n`, /spec must be a mapping/);
    assertRejected(`kind: Configuration\nspec:\n  mtls: true\n`, /spec\.mtls must be a mapping/);
  });
});

Deno.test({
  name: "a unit named like an Object.prototype member is refused, not read as NaN",
  fn() {
    assertRejected(withMtls(`workloadCertTTL: 1constructor`), /spec\.mtls\.workloadCertTTL/);
    assertRejected(withMtls(`allowedClockSkew: 1valueOf`), /spec\.mtls\.allowedClockSkew/);
  },
});

Deno.test("a FileSettingsSource reads a file and expands the given environment", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-config-test-" });
  try {
    const path = join(dir, "config.yaml");
    await Deno.writeTextFile(path, withMtls(`workloadCertTTL: $TTL\nallowedClockSkew: 1m`));
    const settings = await new FileSettingsSource(path, { TTL: "25s" }).load();
    assert.equal(settings.workloadCertTtlMs, 25_000);
    assert.equal(settings.allowedClockSkewMs, MINUTE);

    await Deno.writeTextFile(path, withMtls(`workloadCertTTL: 7x`));
    await assert.rejects(new FileSettingsSource(path, {}).load(), (error: Error) => {
      assert.ok(error instanceof ConfigurationError);
      assert.ok(error.message.includes(path), error.message);
      assert.match(error.message, /spec\.mtls\.workloadCertTTL/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a FileSettingsSource on a missing file says file not found, with the path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-config-test-" });
  try {
    const path = join(dir, "does-not-exist.yaml");
    await assert.rejects(new FileSettingsSource(path, {}).load(), (error: Error) => {
      assert.ok(error instanceof ConfigurationError);
      assert.ok(error.message.includes(path), error.message);
      assert.match(error.message, /file not found/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
