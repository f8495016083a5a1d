/**
 * Which validators are on (src/identity/select.ts), table-driven over modes and Configurations:
 * self-hosted with nothing configured (INSECURE only, the default), self-hosted with JWKS (INSECURE
 * off, no default), Kubernetes mode (KUBERNETES always on and the default, JWKS next to it), and a
 * validator that cannot be built (ValidatorConfigError naming it, the validators already built
 * closed again). JWKS key sets are inline JSON, so nothing touches the network.
 */
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair } from "jose";
import {
  DEFAULT_SETTINGS,
  type MtlsSettings,
  type TokenValidatorConfig,
} from "../../src/config/configuration.ts";
import { InsecureValidator } from "../../src/identity/insecure.ts";
import { JwksValidator } from "../../src/identity/jwks.ts";
import {
  selectValidators,
  ValidatorConfigError,
  type ValidatorContext,
} from "../../src/identity/select.ts";
import {
  type SignRequest,
  type TokenValidator,
  type ValidatedIdentity,
  WireValidator,
} from "../../src/identity/validator.ts";

const SENTRY_TD = "cluster.local";
const SENTRY_NS = "dapr-system";
const AUDIENCE = `spiffe://${SENTRY_TD}/ns/${SENTRY_NS}/dapr-sentry`;

/** An inline JWKS (JSON text) with one public ES256 key. */
async function inlineJwks(kid: string): Promise<string> {
  const { publicKey } = await generateKeyPair("ES256");
  return JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: "ES256" }] });
}

const GOOD_JWKS = await inlineJwks("k1");
const OTHER_JWKS = await inlineJwks("k2");

function jwks(source: unknown): TokenValidatorConfig {
  return { name: "jwks", options: source === undefined ? {} : { source } };
}

function settings(...tokenValidators: TokenValidatorConfig[]): MtlsSettings {
  return { ...DEFAULT_SETTINGS, tokenValidators };
}

/** A scripted KUBERNETES validator that counts how often it is closed. */
class FakeKubernetesValidator implements TokenValidator {
  readonly wire = WireValidator.KUBERNETES;
  closed = 0;
  validate(_request: SignRequest): Promise<ValidatedIdentity> {
    return Promise.resolve({ trustDomain: "public", namespace: "default", appId: "fake" });
  }
  close(): void {
    this.closed++;
  }
}

/**
 * Runs `body` while every JwksValidator's close() is recorded (the real close still runs), so a
 * test can see which of the validators select.ts built it closed again. Every JwksValidator built
 * during `body` is recorded too, so that the test can close the survivors afterwards.
 */
async function observingJwks<T>(
  body: (observed: { built: JwksValidator[]; closed: JwksValidator[] }) => Promise<T>,
): Promise<T> {
  const observed = { built: [] as JwksValidator[], closed: [] as JwksValidator[] };
  const originalClose = Object.getOwnPropertyDescriptor(JwksValidator.prototype, "close")!;
  const originalCreate = JwksValidator.create;
  JwksValidator.prototype.close = function (this: JwksValidator) {
    observed.closed.push(this);
    originalClose.value.call(this);
  };
  JwksValidator.create = async (options, context) => {
    const validator = await originalCreate.call(JwksValidator, options, context);
    observed.built.push(validator);
    return validator;
  };
  try {
    return await body(observed);
  } finally {
    Object.defineProperty(JwksValidator.prototype, "close", originalClose);
    JwksValidator.create = originalCreate;
    for (const validator of observed.built) validator.close();
  }
}

interface Case {
  name: string;
  kubernetes: boolean;
  validators: TokenValidatorConfig[];
  /** Success: the wire values enabled (sorted) and the default. */
  enabled?: number[];
  defaultWire?: number;
  /** Failure: what the ValidatorConfigError must say. */
  error?: RegExp;
  /** How many JWKS validators end up built, and how many of them select.ts closed. */
  jwksBuilt: number;
  jwksClosed: number;
  /** How often the fake KUBERNETES validator is closed (Kubernetes mode). */
  kubernetesClosed?: number;
}

const { INSECURE, KUBERNETES, JWKS, UNKNOWN } = WireValidator;

const CASES: Case[] = [
  {
    name: "self-hosted, nothing configured: INSECURE only, and the default",
    kubernetes: false,
    validators: [],
    enabled: [INSECURE],
    defaultWire: INSECURE,
    jwksBuilt: 0,
    jwksClosed: 0,
  },
  {
    name: "self-hosted, a jwks validator: only JWKS, no default (UNKNOWN)",
    kubernetes: false,
    validators: [jwks(GOOD_JWKS)],
    enabled: [JWKS],
    defaultWire: UNKNOWN,
    jwksBuilt: 1,
    jwksClosed: 0,
  },
  {
    name: "self-hosted, jwks listed twice: one JWKS, the replaced one closed",
    kubernetes: false,
    validators: [jwks(GOOD_JWKS), jwks(OTHER_JWKS)],
    enabled: [JWKS],
    defaultWire: UNKNOWN,
    jwksBuilt: 2,
    jwksClosed: 1,
  },
  {
    name: "Kubernetes, nothing configured: KUBERNETES only, and the default",
    kubernetes: true,
    validators: [],
    enabled: [KUBERNETES],
    defaultWire: KUBERNETES,
    jwksBuilt: 0,
    jwksClosed: 0,
    kubernetesClosed: 0,
  },
  {
    name: "Kubernetes, a jwks validator: KUBERNETES (the default) and JWKS, never INSECURE",
    kubernetes: true,
    validators: [jwks(GOOD_JWKS)],
    enabled: [KUBERNETES, JWKS],
    defaultWire: KUBERNETES,
    jwksBuilt: 1,
    jwksClosed: 0,
    kubernetesClosed: 0,
  },
  {
    name: "Kubernetes, jwks listed twice: one JWKS, the replaced one closed",
    kubernetes: true,
    validators: [jwks(GOOD_JWKS), jwks(OTHER_JWKS)],
    enabled: [KUBERNETES, JWKS],
    defaultWire: KUBERNETES,
    jwksBuilt: 2,
    jwksClosed: 1,
    kubernetesClosed: 0,
  },
  {
    name: "self-hosted, an inline source that is not a key set",
    kubernetes: false,
    validators: [jwks('{"foo": 1}')],
    error: /^token validator: inline JWKS: not a JSON Web Key Set/,
    jwksBuilt: 0,
    jwksClosed: 0,
  },
  {
    name: "self-hosted, a source that is no file, URL or JSON",
    kubernetes: false,
    validators: [jwks("/nonexistent/dir/jwks.json")],
    error: /^token validator: JWKS source "\/nonexistent\/dir\/jwks\.json": no such file/,
    jwksBuilt: 0,
    jwksClosed: 0,
  },
  {
    name: "self-hosted, no source option",
    kubernetes: false,
    validators: [jwks(undefined)],
    error: /^token validator: jwks token validator: option "source" is required/,
    jwksBuilt: 0,
    jwksClosed: 0,
  },
  {
    name: "self-hosted, a good jwks then a bad one: the good one is closed",
    kubernetes: false,
    validators: [jwks(GOOD_JWKS), jwks('{"keys": [')],
    error: /^token validator: inline JWKS: not valid JSON/,
    jwksBuilt: 1,
    jwksClosed: 1,
  },
  {
    name: "self-hosted, two good jwks then a bad one: both are closed",
    kubernetes: false,
    validators: [jwks(GOOD_JWKS), jwks(OTHER_JWKS), jwks("{}")],
    error: /^token validator: inline JWKS: not a JSON Web Key Set/,
    jwksBuilt: 2,
    jwksClosed: 2,
  },
  {
    name: "Kubernetes, a bad jwks: the KUBERNETES validator is closed",
    kubernetes: true,
    validators: [jwks("{}")],
    error: /^token validator: inline JWKS: not a JSON Web Key Set/,
    jwksBuilt: 0,
    jwksClosed: 0,
    kubernetesClosed: 1,
  },
  {
    name: "Kubernetes, a good jwks then a bad one: both built validators are closed",
    kubernetes: true,
    validators: [jwks(GOOD_JWKS), jwks({ not: "a string" })],
    error: /^token validator: jwks token validator: option "source" is required/,
    jwksBuilt: 1,
    jwksClosed: 1,
    kubernetesClosed: 1,
  },
];

Deno.test("selectValidators: modes and Configurations, table-driven", async (t) => {
  for (const testCase of CASES) {
    await t.step({
      name: testCase.name,
      fn: async () => {
        const fake = new FakeKubernetesValidator();
        let factoryCalls = 0;
        const context: ValidatorContext = {
          sentryTrustDomain: SENTRY_TD,
          sentryNamespace: SENTRY_NS,
          ...(testCase.kubernetes
            ? {
              createKubernetesValidator: () => {
                factoryCalls++;
                return fake;
              },
            }
            : {}),
        };
        await observingJwks(async (observed) => {
          const selecting = selectValidators(settings(...testCase.validators), context);
          if (testCase.error) {
            await assert.rejects(selecting, (error: Error) => {
              assert.ok(
                error instanceof ValidatorConfigError,
                `not a ValidatorConfigError: ${error}`,
              );
              assert.equal(error.name, "ValidatorConfigError");
              assert.match(error.message, testCase.error!);
              return true;
            });
          } else {
            const set = await selecting;
            assert.deepEqual([...set.enabled.keys()].sort(), testCase.enabled);
            assert.equal(set.defaultWire, testCase.defaultWire);
            for (const [wire, validator] of set.enabled) assert.equal(validator.wire, wire);
            if (set.enabled.has(INSECURE)) {
              assert.ok(set.enabled.get(INSECURE) instanceof InsecureValidator);
            }
            if (set.enabled.has(KUBERNETES)) assert.equal(set.enabled.get(KUBERNETES), fake);
            const jwksValidator = set.enabled.get(JWKS);
            if (jwksValidator) {
              assert.ok(jwksValidator instanceof JwksValidator);
              assert.equal(jwksValidator.audience, AUDIENCE);
              // The one in force is the last one listed, and it is not closed.
              assert.equal(jwksValidator, observed.built.at(-1));
              assert.ok(!observed.closed.includes(jwksValidator), "the JWKS in force was closed");
            }
          }
          assert.equal(observed.built.length, testCase.jwksBuilt, "JWKS validators built");
          assert.equal(observed.closed.length, testCase.jwksClosed, "JWKS validators closed");
          assert.equal(new Set(observed.closed).size, observed.closed.length, "closed twice");
          if (testCase.kubernetes) {
            assert.equal(factoryCalls, 1, "createKubernetesValidator calls");
            assert.equal(fake.closed, testCase.kubernetesClosed, "KUBERNETES validator closed");
          }
        });
      },
    });
  }
});

Deno.test("selectValidators: the default set's INSECURE validator checks requests", async () => {
  const set = await selectValidators(DEFAULT_SETTINGS, {
    sentryTrustDomain: SENTRY_TD,
    sentryNamespace: SENTRY_NS,
  });
  const insecure = set.enabled.get(set.defaultWire)!;
  const request: SignRequest = {
    id: "myapp",
    token: "",
    trustDomain: "",
    namespace: "default",
    csr: new Uint8Array([1]),
    tokenValidator: UNKNOWN,
    jwtAudiences: [],
  };
  assert.deepEqual(await insecure.validate(request), {
    trustDomain: "public",
    namespace: "default",
    appId: "myapp",
  });
  await assert.rejects(
    async () => await insecure.validate({ ...request, id: "" }),
    { message: "invalid request: parameter app-id cannot be empty" },
  );
});

Deno.test("selectValidators: a sentry identity that cannot form the JWKS audience is a config error", async () => {
  for (const kubernetes of [false, true]) {
    const fake = new FakeKubernetesValidator();
    await assert.rejects(
      selectValidators(settings(jwks(GOOD_JWKS)), {
        sentryTrustDomain: "Not A Domain",
        sentryNamespace: SENTRY_NS,
        ...(kubernetes ? { createKubernetesValidator: () => fake } : {}),
      }),
      (error: Error) => {
        assert.ok(error instanceof ValidatorConfigError);
        assert.match(error.message, /^token validator: jwks token validator: cannot form sentry's/);
        return true;
      },
    );
    assert.equal(fake.closed, kubernetes ? 1 : 0);
  }
});

Deno.test("selectValidators: each call builds new validators (a reload does not share them)", async () => {
  await observingJwks(async (observed) => {
    const context = { sentryTrustDomain: SENTRY_TD, sentryNamespace: SENTRY_NS };
    const first = await selectValidators(settings(jwks(GOOD_JWKS)), context);
    const second = await selectValidators(settings(jwks(GOOD_JWKS)), context);
    assert.notEqual(first.enabled.get(JWKS), second.enabled.get(JWKS));
    assert.equal(observed.built.length, 2);
    assert.equal(observed.closed.length, 0);
    const insecureA = await selectValidators(DEFAULT_SETTINGS, context);
    const insecureB = await selectValidators(DEFAULT_SETTINGS, context);
    assert.notEqual(insecureA.enabled.get(INSECURE), insecureB.enabled.get(INSECURE));
  });
});
