/**
 * The SignCertificate handler (src/server/ca-service.ts) without a process: the README's table
 * of checks and status codes, row by row, through `signCertificate` with a scripted validator
 * and issuer, plus the response it builds from an issued chain.
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { SigningError } from "../../src/ca/signer.ts";
import { DEFAULT_SETTINGS } from "../../src/config/configuration.ts";
import {
  type SignRequest,
  type TokenValidator,
  type ValidatedIdentity,
  ValidationError,
  WireValidator,
} from "../../src/identity/validator.ts";
import { Logger } from "../../src/observability/logger.ts";
import { SentryMetrics } from "../../src/observability/metrics.ts";
import { type CaServiceDeps, signCertificate, SignFailure } from "../../src/server/ca-service.ts";
import { CaState } from "../../src/server/ca-state.ts";
import { IdentityRateLimiter } from "../../src/server/identity-rate-limit.ts";
import type { IssueRequest, WorkloadIssuer } from "../../src/server/workload-issuer.ts";
import { CsrError } from "../../src/x509/csr.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date("2026-06-01T12:00:00Z");
const BUNDLE = testTrustBundle({ now: NOW });

/** A validator that accepts or throws what it is told. */
function validator(wire: number, outcome: ValidatedIdentity | Error): TokenValidator {
  return {
    wire,
    validate: () => outcome instanceof Error ? Promise.reject(outcome) : Promise.resolve(outcome),
  };
}

const ACCEPTED: ValidatedIdentity = { trustDomain: "public", namespace: "ns", appId: "app" };

function request(overrides: Partial<SignRequest> = {}): SignRequest {
  return {
    id: "app",
    token: "",
    trustDomain: "",
    namespace: "ns",
    csr: new TextEncoder().encode("a CSR"),
    tokenValidator: WireValidator.UNKNOWN,
    jwtAudiences: [],
    ...overrides,
  };
}

/** An issuer that records its requests and answers or fails as told. */
function issuer(outcome: Error | undefined = undefined) {
  const requests: IssueRequest[] = [];
  const fake: WorkloadIssuer = {
    issue(issue) {
      requests.push(issue);
      if (outcome) return Promise.reject(outcome);
      return Promise.resolve({
        chain: new TextEncoder().encode(`chain for ${issue.id}`),
        notAfter: new Date(issue.now.getTime() + issue.timing.ttlMs),
      });
    },
  };
  return { fake, requests };
}

function deps(
  validators: TokenValidator[],
  defaultWire: number,
  workloadIssuer: WorkloadIssuer,
  extra: Partial<CaServiceDeps> = {},
): CaServiceDeps {
  const enabled = new Map(validators.map((v) => [v.wire, v]));
  return {
    state: new CaState(BUNDLE, DEFAULT_SETTINGS, { defaultWire, enabled }),
    metrics: new SentryMetrics(),
    logger: new Logger({
      level: "error",
      json: false,
      scope: "test",
      version: "0",
      sink: () => {},
    }),
    now: () => NOW,
    issuer: workloadIssuer,
    namespace: "dapr-system",
    clusterDomain: "cluster.local",
    ...extra,
  };
}

/** A one-a-minute limiter whose only token for `id` is already taken. */
function exhaustedLimiter(id: string): IdentityRateLimiter {
  const limiter = new IdentityRateLimiter(1);
  assert.ok(limiter.tryTake(id, NOW.getTime()));
  return limiter;
}

async function refusal(promise: Promise<unknown>): Promise<SignFailure> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SignFailure, `not a SignFailure: ${error}`);
    return error;
  }
  assert.fail("the request was not refused");
}

Deno.test("the README's checks, in order, with their status codes and metric reasons", async (t) => {
  const insecure = validator(WireValidator.INSECURE, ACCEPTED);
  const rows: {
    name: string;
    deps: CaServiceDeps;
    request: SignRequest;
    code: status;
    message: RegExp;
    reason: string;
  }[] = [
    {
      name: "no validator named and none is the default",
      deps: deps([insecure], WireValidator.UNKNOWN, issuer().fake),
      request: request(),
      code: status.INVALID_ARGUMENT,
      message: /^a validator name must be specified in this environment$/,
      reason: "invalid_validator",
    },
    {
      name: "the named validator is not enabled",
      deps: deps([insecure], WireValidator.INSECURE, issuer().fake),
      request: request({ tokenValidator: WireValidator.JWKS }),
      code: status.INVALID_ARGUMENT,
      message: /^the requested validator is not enabled$/,
      reason: "invalid_validator",
    },
    {
      name: "the validator refuses",
      deps: deps(
        [validator(WireValidator.INSECURE, new ValidationError("invalid request: nope"))],
        WireValidator.INSECURE,
        issuer().fake,
      ),
      request: request(),
      code: status.PERMISSION_DENIED,
      message: /^invalid request: nope$/,
      reason: "token_validation_failed",
    },
    {
      name: "the identity cannot form a SPIFFE ID",
      deps: deps(
        [validator(WireValidator.INSECURE, { ...ACCEPTED, appId: "a/b" })],
        WireValidator.INSECURE,
        issuer().fake,
      ),
      request: request(),
      code: status.PERMISSION_DENIED,
      message: /a\/b/,
      reason: "token_validation_failed",
    },
    {
      name: "over the per-identity rate limit",
      deps: deps([insecure], WireValidator.INSECURE, issuer().fake, {
        rateLimiter: exhaustedLimiter("spiffe://public/ns/ns/app"),
      }),
      request: request(),
      code: status.RESOURCE_EXHAUSTED,
      message: /^too many requests for spiffe:\/\/public\/ns\/ns\/app: .*retry with backoff$/,
      reason: "rate_limited",
    },
    {
      name: "the CSR is refused",
      deps: deps(
        [insecure],
        WireValidator.INSECURE,
        issuer(new CsrError("invalid signature")).fake,
      ),
      request: request(),
      code: status.INVALID_ARGUMENT,
      message: /^invalid signature$/,
      reason: "invalid_csr",
    },
    {
      name: "the CA cannot sign",
      deps: deps(
        [insecure],
        WireValidator.INSECURE,
        issuer(new SigningError("the issuer certificate expired at X")).fake,
      ),
      request: request(),
      code: status.INTERNAL,
      message: /^the issuer certificate expired at X$/,
      reason: "cert_sign_failed",
    },
    {
      name: "a fault while signing",
      deps: deps([insecure], WireValidator.INSECURE, issuer(new Error("worker died")).fake),
      request: request(),
      code: status.INTERNAL,
      message: /^failed to sign certificate: worker died$/,
      reason: "cert_sign_failed",
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const failure = await refusal(signCertificate(row.request, row.deps));
      assert.equal(failure.code, row.code);
      assert.match(failure.message, row.message);
      assert.equal(failure.reason, row.reason);
    });
  }
});

Deno.test("an accepted request is issued for the validated identity and answered as Dapr does", async () => {
  const recorder = issuer();
  const jwks = validator(WireValidator.JWKS, { trustDomain: "td", namespace: "ns", appId: "a" });
  const response = await signCertificate(
    request({ tokenValidator: WireValidator.JWKS }),
    deps([jwks], WireValidator.UNKNOWN, recorder.fake),
  );
  assert.equal(recorder.requests.length, 1);
  const [issued] = recorder.requests;
  assert.equal(issued.id.toString(), "spiffe://td/ns/ns/a");
  assert.equal(issued.bundle, BUNDLE);
  assert.equal(issued.now, NOW);
  assert.deepEqual(issued.timing, {
    ttlMs: DEFAULT_SETTINGS.workloadCertTtlMs,
    skewMs: DEFAULT_SETTINGS.allowedClockSkewMs,
  });
  assert.equal(new TextDecoder().decode(issued.csrPem), "a CSR");
  assert.equal(response.workloadCertificate.toString(), "chain for spiffe://td/ns/ns/a");
  assert.deepEqual(response.trustChainCertificates.map(String), [BUNDLE.anchorsPem]);
  assert.deepEqual(response.validUntil, {
    seconds: String((NOW.getTime() + DEFAULT_SETTINGS.workloadCertTtlMs) / 1000),
    nanos: 0,
  });
});

Deno.test("control-plane services in sentry's namespace are issued with Dapr's DNS names", async () => {
  for (
    const [identity, expected] of [
      [{ trustDomain: "td", namespace: "dapr-system", appId: "dapr-operator" }, [
        "dapr-webhook.dapr-system.svc",
      ]],
      [{ trustDomain: "td", namespace: "default", appId: "dapr-operator" }, []],
      [{ trustDomain: "td", namespace: "dapr-system", appId: "myapp" }, []],
    ] as const
  ) {
    const recorder = issuer();
    await signCertificate(
      request(),
      deps([validator(WireValidator.INSECURE, identity)], WireValidator.INSECURE, recorder.fake),
    );
    assert.deepEqual(recorder.requests[0].dnsNames, expected, JSON.stringify(identity));
  }
});
