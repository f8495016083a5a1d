/**
 * src/identity/kubernetes-token.ts: the token's claims read without verification (compact
 * JWTs through jose, bare JSON claims as Dapr reads them, refusals naming what is wrong), the
 * pod the claims name checked against the TokenReview, and the TokenReview itself against a
 * scripted `create` (audiences, service-account usernames, the pod-name extra, the brief reuse
 * of successful reviews, failures never reused).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { KubeRequestError } from "../../src/kubernetes/client.ts";
import {
  decodeTokenClaims,
  type Review,
  tokenPodName,
  tokenPodUid,
  TokenReviewer,
} from "../../src/identity/kubernetes-token.ts";
import { ValidationError } from "../../src/identity/validator.ts";
import { captureLog } from "../helpers/log_capture.ts";

function b64url(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}

/** A compact JWT with `payload` (as text) and a junk signature. */
function jwt(payload: string): string {
  return [b64url('{"alg":"RS256"}'), b64url(payload), "c2lnbmF0dXJl"].join(".");
}

function refusal(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("decodeTokenClaims: JWT payloads and bare JSON claims; refusals say what is wrong", async (t) => {
  const claims = { sub: "system:serviceaccount:ns:sa", "kubernetes.io": { pod: { name: "p" } } };
  const rows: { name: string; token: string; outcome: Record<string, unknown> | RegExp }[] = [
    { name: "a compact JWT", token: jwt(JSON.stringify(claims)), outcome: claims },
    { name: "bare JSON claims", token: `  ${JSON.stringify(claims)}`, outcome: claims },
    {
      name: "two parts",
      token: "a.b",
      outcome: /^the token is not a JWT \(expected three dot-separated parts\)$/,
    },
    { name: "an opaque token", token: "sha256~abcdef", outcome: /^the token is not a JWT/ },
    {
      name: "a payload that is not JSON",
      token: jwt("not json"),
      outcome: /^the token's payload cannot be decoded: /,
    },
    {
      name: "a payload that is not an object",
      token: jwt("[1, 2]"),
      outcome: /^the token's payload cannot be decoded: /,
    },
    {
      name: "a payload that is not base64url",
      token: "eyJhbGciOiJSUzI1NiJ9.!!!.sig",
      outcome: /^the token's payload cannot be decoded: /,
    },
    { name: "broken bare JSON", token: '{"sub": ', outcome: /^the token is not valid JSON: / },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      if (row.outcome instanceof RegExp) refusal(() => decodeTokenClaims(row.token), row.outcome);
      else assert.deepEqual(decodeTokenClaims(row.token), row.outcome);
    });
  }
});

Deno.test("tokenPodName and tokenPodUid: the pod the claims name, checked against the review", async (t) => {
  const review: Review = { namespace: "ns", serviceAccount: "sa" };
  const bound = (pod: unknown, namespace: unknown = "ns") => ({
    "kubernetes.io": { namespace, pod },
  });
  const rows: {
    name: string;
    claims: Record<string, unknown>;
    review?: Review;
    outcome: string | RegExp;
  }[] = [
    { name: "bound to a pod", claims: bound({ name: "app-1", uid: "u" }), outcome: "app-1" },
    {
      name: "a legacy token (no pod)",
      claims: { "kubernetes.io": { namespace: "ns" } },
      outcome: /no pod name claim \(kubernetes\.io -> pod -> name\).*legacy service-account/,
    },
    { name: "no kubernetes.io claims", claims: {}, outcome: /no pod name claim/ },
    { name: "an empty pod name", claims: bound({ name: "" }), outcome: /no pod name claim/ },
    {
      name: "another namespace than the review's",
      claims: bound({ name: "app-1" }, "other"),
      outcome: /namespace claim "other" does not match its service account's namespace "ns"/,
    },
    {
      name: "another pod than the review's",
      claims: bound({ name: "app-1" }),
      review: { ...review, podName: "app-2" },
      outcome: /pod name claim "app-1" does not match the pod name "app-2" the TokenReview/,
    },
    {
      name: "not a pod name",
      claims: bound({ name: "App_1" }),
      outcome: /pod name claim "App_1" is not a pod name/,
    },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      const call = () => tokenPodName(row.claims, row.review ?? review);
      if (row.outcome instanceof RegExp) refusal(call, row.outcome);
      else assert.equal(call(), row.outcome);
    });
  }
  assert.equal(tokenPodUid(bound({ name: "a", uid: "u-1" })), "u-1");
  assert.equal(tokenPodUid(bound("not an object")), undefined);
  assert.equal(tokenPodUid({}), undefined);
});

// ---------------------------------------------------------------------------------------------
// TokenReviewer.

const AUDIENCES = ["dapr.io/sentry", "spiffe://td/ns/dapr-system/dapr-sentry"];

/** The `create` of a KubeClient answering TokenReviews from a script. */
class ScriptedReviews {
  readonly bodies: { spec: { token: string; audiences: string[] } }[] = [];
  constructor(readonly answers: unknown[]) {}

  create<T>(path: string, body: unknown): Promise<T> {
    assert.equal(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    this.bodies.push(body as ScriptedReviews["bodies"][number]);
    const answer = this.answers.shift();
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer as T);
  }
}

function status(extra: Record<string, unknown>) {
  return {
    status: {
      authenticated: true,
      audiences: [AUDIENCES[1]],
      user: { username: "system:serviceaccount:ns:sa" },
      ...extra,
    },
  };
}

function reviewer(answers: unknown[], now = new Date()) {
  const client = new ScriptedReviews(answers);
  const { logger, messages: warnings } = captureLog("warn");
  const tokens = new TokenReviewer({
    client,
    audiences: AUDIENCES,
    cacheTtlMs: 10_000,
    now: () => now,
    logger,
  });
  return { client, tokens, warnings };
}

Deno.test("TokenReviewer: what the review says, table-driven", async (t) => {
  const rows: { name: string; answer: unknown; outcome: Review | RegExp; warned?: RegExp }[] = [
    {
      name: "a service account, for sentry's SPIFFE ID",
      answer: status({}),
      outcome: { namespace: "ns", serviceAccount: "sa" },
    },
    {
      name: "the pod name extra is reported",
      answer: status({
        user: {
          username: "system:serviceaccount:ns:sa",
          extra: { "authentication.kubernetes.io/pod-name": ["app-1"] },
        },
      }),
      outcome: { namespace: "ns", serviceAccount: "sa", podName: "app-1" },
    },
    {
      name: "no audiences reported: accepted, with a warning",
      answer: status({ audiences: [] }),
      outcome: { namespace: "ns", serviceAccount: "sa" },
      warned: /TokenReview reported no audiences/,
    },
    {
      name: "only other audiences",
      answer: status({ audiences: ["https://kubernetes.default.svc"] }),
      outcome:
        /not valid for sentry: the TokenReview granted audiences \["https:\/\/kubernetes\.default\.svc"\], none of/,
    },
    {
      name: "the API server's error",
      answer: status({ authenticated: false, error: "token expired" }),
      outcome: /^the token was not authenticated: token expired$/,
    },
    {
      name: "not authenticated, no reason",
      answer: status({ authenticated: false }),
      outcome: /^the token was not authenticated by the Kubernetes API server$/,
    },
    {
      name: "a user, not a service account",
      answer: status({ user: { username: "kubernetes-admin" } }),
      outcome: /not a service-account token: it authenticates "kubernetes-admin"/,
    },
    {
      name: "an empty answer",
      answer: {},
      outcome: /not authenticated by the Kubernetes API server/,
    },
    {
      name: "the API server cannot be reached",
      answer: new KubeRequestError({
        method: "POST",
        path: "/apis/authentication.k8s.io/v1/tokenreviews",
        server: "https://kube:6443",
        code: "ETIMEDOUT",
        detail: "no answer within 10s",
      }),
      outcome: /^cannot verify the token now: kubernetes API: POST .*no answer within 10s/,
      warned: /cannot get TokenReview/,
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const { client, tokens, warnings } = reviewer([row.answer]);
      const review = tokens.review("the-token", {});
      if (row.outcome instanceof RegExp) {
        await assert.rejects(review, (error: unknown) => {
          assert.ok(error instanceof ValidationError, `${error}`);
          assert.match(error.message, row.outcome as RegExp);
          return true;
        });
      } else {
        assert.deepEqual(await review, row.outcome);
      }
      assert.deepEqual(client.bodies.map((body) => body.spec), [
        { token: "the-token", audiences: AUDIENCES },
      ]);
      if (row.warned) {
        assert.equal(warnings.length, 1);
        assert.match(warnings[0], row.warned);
      } else {
        assert.deepEqual(warnings, []);
      }
    });
  }
});

Deno.test("TokenReviewer: successes are reused (never past exp), failures are not; one audience warning", async () => {
  const now = new Date("2030-01-01T00:00:00Z");
  const seconds = now.getTime() / 1000;
  const { client, tokens, warnings } = reviewer([
    status({ audiences: [] }),
    status({ authenticated: false }),
    status({ audiences: [] }),
    status({}),
    status({}),
    status({}),
  ], now);
  await tokens.review("a", {});
  await tokens.review("a", { exp: seconds + 600 });
  assert.equal(client.bodies.length, 1, "a success was not reused");
  assert.equal(warnings.length, 1, "the missing audiences are warned about once");
  await assert.rejects(tokens.review("b", {}), ValidationError);
  await tokens.review("b", {});
  assert.equal(client.bodies.length, 3, "a failure was reused");
  assert.equal(warnings.length, 1);
  // Expired by the reviewer's clock: not kept.
  await tokens.review("c", { exp: seconds - 1 });
  await tokens.review("c", { exp: seconds - 1 });
  assert.equal(client.bodies.length, 5);
  tokens.clear();
  await tokens.review("a", {});
  assert.equal(client.bodies.length, 6, "clear() kept a review");
});
