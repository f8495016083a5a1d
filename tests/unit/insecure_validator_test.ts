/**
 * The INSECURE validator (src/identity/insecure.ts) and the checks every validator runs first,
 * `validateCommon` (src/identity/validator.ts): Dapr's messages for a missing or bad app id, CSR
 * and namespace (several problems reported together), the trust domain's characters, and the
 * identity the INSECURE validator echoes (trust domain `public` when none is asked for).
 */
import assert from "node:assert/strict";
import { InsecureValidator } from "../../src/identity/insecure.ts";
import {
  type SignRequest,
  validateCommon,
  ValidationError,
  WireValidator,
} from "../../src/identity/validator.ts";

function request(overrides: Partial<SignRequest> = {}): SignRequest {
  return {
    id: "myapp",
    token: "",
    trustDomain: "",
    namespace: "default",
    csr: new TextEncoder().encode("a CSR"),
    tokenValidator: WireValidator.INSECURE,
    jwtAudiences: [],
    ...overrides,
  };
}

const NO_CSR = new Uint8Array(0);
const TRUST_DOMAIN_RULE = "may only contain lowercase letters, digits, '.', '_' and '-'";

/** One request and what the common checks must say about it (undefined: accepted). */
interface Case {
  name: string;
  request: Partial<SignRequest>;
  refused?: string;
}

const CASES: Case[] = [
  { name: "a complete request", request: {} },
  {
    name: "empty app id",
    request: { id: "" },
    refused: "invalid request: parameter app-id cannot be empty",
  },
  {
    name: "app id with a dot",
    request: { id: "my.app" },
    refused: "invalid request: parameter app-id cannot contain dots",
  },
  {
    name: "app id that is only a dot",
    request: { id: "." },
    refused: "invalid request: parameter app-id cannot contain dots",
  },
  { name: "app id of 64 ASCII bytes", request: { id: "a".repeat(64) } },
  {
    name: "app id of 65 ASCII bytes",
    request: { id: "a".repeat(65) },
    refused: "invalid request: app ID must be 64 characters or less",
  },
  // Dapr counts bytes (Go's len on a string), not characters.
  { name: "app id of 32 two-byte characters (64 bytes)", request: { id: "é".repeat(32) } },
  {
    name: "app id of 33 two-byte characters (66 bytes)",
    request: { id: "é".repeat(33) },
    refused: "invalid request: app ID must be 64 characters or less",
  },
  {
    name: "app id of 22 three-byte characters (66 bytes, 22 characters)",
    request: { id: "€".repeat(22) },
    refused: "invalid request: app ID must be 64 characters or less",
  },
  {
    name: "app id of 63 ASCII bytes and one two-byte character (65 bytes, 64 characters)",
    request: { id: "a".repeat(63) + "é" },
    refused: "invalid request: app ID must be 64 characters or less",
  },
  { name: "app id of 16 four-byte characters (64 bytes)", request: { id: "😀".repeat(16) } },
  {
    name: "empty CSR",
    request: { csr: NO_CSR },
    refused: "invalid request: CSR is required",
  },
  {
    name: "empty namespace",
    request: { namespace: "" },
    refused: "invalid request: namespace is required",
  },
  {
    name: "everything missing: all problems, in Dapr's order",
    request: { id: "", csr: NO_CSR, namespace: "" },
    refused: "invalid request: parameter app-id cannot be empty; CSR is required; " +
      "namespace is required",
  },
  {
    name: "an app id with a dot that is also too long",
    request: { id: "a.".repeat(33) },
    refused:
      "invalid request: parameter app-id cannot contain dots; app ID must be 64 characters or less",
  },
  {
    name: "a dotted app id and no namespace",
    request: { id: "a.b", namespace: "" },
    refused: "invalid request: parameter app-id cannot contain dots; namespace is required",
  },
  // Trust domain: checked only when the request is otherwise complete.
  { name: "trust domain with every allowed character", request: { trustDomain: "my-td_1.local" } },
  {
    name: "trust domain with capitals",
    request: { trustDomain: "Cluster.Local" },
    refused: `trust domain "Cluster.Local" ${TRUST_DOMAIN_RULE}`,
  },
  {
    name: "trust domain with a slash",
    request: { trustDomain: "td/evil" },
    refused: `trust domain "td/evil" ${TRUST_DOMAIN_RULE}`,
  },
  {
    name: "trust domain with a space",
    request: { trustDomain: "my td" },
    refused: `trust domain "my td" ${TRUST_DOMAIN_RULE}`,
  },
  {
    name: "trust domain with a colon (a port)",
    request: { trustDomain: "td:8080" },
    refused: `trust domain "td:8080" ${TRUST_DOMAIN_RULE}`,
  },
  {
    name: "trust domain with a non-ASCII letter",
    request: { trustDomain: "tést" },
    refused: `trust domain "tést" ${TRUST_DOMAIN_RULE}`,
  },
  {
    name: "trust domain '..' (a dot segment)",
    request: { trustDomain: ".." },
    refused: `trust domain ".." is invalid: it cannot be '.' or '..'`,
  },
  {
    name: "trust domain '.'",
    request: { trustDomain: "." },
    refused: `trust domain "." is invalid: it cannot be '.' or '..'`,
  },
  {
    name: "a bad trust domain is not mentioned while the request itself is incomplete",
    request: { namespace: "", trustDomain: "BAD" },
    refused: "invalid request: namespace is required",
  },
];

Deno.test("validateCommon: Dapr's checks and messages, table-driven", async (t) => {
  for (const testCase of CASES) {
    await t.step(testCase.name, () => {
      const req = request(testCase.request);
      if (testCase.refused === undefined) {
        validateCommon(req);
        return;
      }
      assert.throws(() => validateCommon(req), (error: Error) => {
        assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
        assert.equal(error.message, testCase.refused);
        return true;
      });
    });
  }
});

Deno.test("INSECURE: the same checks and messages as validateCommon", async (t) => {
  const validator = new InsecureValidator();
  for (const testCase of CASES) {
    await t.step(testCase.name, async () => {
      const req = request(testCase.request);
      if (testCase.refused === undefined) {
        const identity = await validator.validate(req);
        assert.equal(identity.appId, req.id);
        return;
      }
      await assert.rejects(async () => await validator.validate(req), (error: Error) => {
        assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
        assert.equal(error.message, testCase.refused);
        return true;
      });
    });
  }
});

Deno.test("INSECURE: echoes the requested identity; trust domain defaults to public", async (t) => {
  const validator = new InsecureValidator();
  const steps: {
    name: string;
    request: Partial<SignRequest>;
    identity: { trustDomain: string; namespace: string; appId: string };
  }[] = [
    {
      name: "no trust domain asked for",
      request: {},
      identity: { trustDomain: "public", namespace: "default", appId: "myapp" },
    },
    {
      name: "a trust domain asked for",
      request: { trustDomain: "cluster.local", namespace: "prod", id: "orders" },
      identity: { trustDomain: "cluster.local", namespace: "prod", appId: "orders" },
    },
    {
      name: "a token is ignored, whatever it holds",
      request: { token: "not even a JWT", trustDomain: "public" },
      identity: { trustDomain: "public", namespace: "default", appId: "myapp" },
    },
    {
      name: "a multi-byte app id of 64 bytes is kept as is",
      request: { id: "é".repeat(32) },
      identity: { trustDomain: "public", namespace: "default", appId: "é".repeat(32) },
    },
  ];
  for (const step of steps) {
    await t.step(step.name, async () => {
      assert.deepEqual(await validator.validate(request(step.request)), step.identity);
    });
  }
});

Deno.test("INSECURE: selected by the INSECURE wire value", () => {
  assert.equal(new InsecureValidator().wire, WireValidator.INSECURE);
  assert.equal(WireValidator.INSECURE, 1);
});
