/**
 * End to end: `sentry --store k8s --namespace dapr-system --kubeconfig <file>` against the fake
 * API server (tests/fakes/kube-apiserver.ts), checked with the real kubectl where an operator
 * would use it: first boot creates the Secret and ConfigMap; replicas racing converge on one
 * CA; a Helm-style pre-filled Secret is used as is and ConfigMap drift repaired; rotating the
 * Secret reaches the running server; `kubectl patch` of the Configuration changes the next
 * certificate's TTL; the KUBERNETES validator signs for a pod from its annotations; the API
 * down at start is waited for, and an outage mid-run does not stop signing.
 */
import assert from "node:assert/strict";
import { eventually } from "../helpers/eventually.ts";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { opensslBundle } from "../helpers/openssl.ts";
import { runSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

const NS = "dapr-system";
const NAME = "dapr-trust-bundle";

function sentryArgs(kubeconfig: string, extra: string[] = []): string[] {
  return [
    "--store",
    "k8s",
    "--namespace",
    NS,
    "--kubeconfig",
    kubeconfig,
    "--trust-domain",
    "cluster.local",
    ...extra,
  ];
}

function configuration(ttl: string) {
  return {
    apiVersion: "dapr.io/v1alpha1",
    kind: "Configuration",
    metadata: { name: "daprsystem", namespace: NS },
    spec: { mtls: { enabled: true, workloadCertTTL: ttl, allowedClockSkew: "0s" } },
  };
}

interface Stored {
  data?: Record<string, string>;
  metadata?: { resourceVersion?: string };
}

/** An object of the fake, typed loosely for reading `data` and `metadata`. */
function stored(
  api: FakeKubeApiServer,
  kind: string,
  name = NAME,
  namespace = NS,
): Stored | undefined {
  return api.get(kind, namespace, name) as Stored | undefined;
}

function secretPem(api: FakeKubeApiServer, key: string): string {
  return Buffer.from(String(stored(api, "secrets")?.data?.[key] ?? ""), "base64").toString("utf8");
}

/**
 * Creates pod `default/app-pod` (service account `app-sa`, `dapr.io/app-id: myapp`) and returns
 * a projected token for it with sentry's audiences, registered for TokenReview.
 */
function appPodToken(api: FakeKubeApiServer): string {
  api.put("pods", "default", {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "app-pod", namespace: "default", annotations: { "dapr.io/app-id": "myapp" } },
    spec: { serviceAccountName: "app-sa", containers: [] },
  });
  return api.serviceAccountJwt({
    namespace: "default",
    serviceAccount: "app-sa",
    podName: "app-pod",
    audiences: ["dapr.io/sentry", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"],
  });
}

async function kubectl(kubeconfig: string, args: string[]): Promise<string> {
  const output = await new Deno.Command("kubectl", {
    args: ["--kubeconfig", kubeconfig, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`kubectl ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
  return text;
}

async function setup() {
  const api = await FakeKubeApiServer.start();
  const work = await tempDir();
  const kubeconfig = await api.writeKubeconfig(join(work, "kubeconfig"));
  return { api, work, kubeconfig };
}

Deno.test("first boot on an empty namespace creates the Secret and ConfigMap that kubectl reads", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    api.put("configurations", NS, configuration("24h"));
    const sentry = await startSentry({ args: sentryArgs(kubeconfig) });
    try {
      const secret = JSON.parse(
        await kubectl(kubeconfig, ["get", "secret", NAME, "-n", NS, "-o", "json"]),
      );
      assert.deepEqual(Object.keys(secret.data).sort(), ["ca.crt", "issuer.crt", "issuer.key"]);
      const configMap = JSON.parse(
        await kubectl(kubeconfig, ["get", "configmap", NAME, "-n", NS, "-o", "json"]),
      );
      assert.equal(
        configMap.data["ca.crt"],
        secretPem(api, "ca.crt"),
        "the ConfigMap carries the anchors",
      );
      assert.match(sentry.logs(), /using Configuration dapr-system\/daprsystem/);
      assert.match(sentry.logs(), /token validators: kubernetes \(default\)/);
      assert.match(sentry.logs(), /created ConfigMap dapr-system\/dapr-trust-bundle/);
      await assert.rejects(
        signOnce(sentry.grpcPort, secretPem(api, "ca.crt"), work, { tokenValidator: 1 }),
        (error: { code: number }) => error.code === 3,
        "INSECURE is off in Kubernetes mode",
      );
    } finally {
      await sentry.stop();
    }
  } finally {
    await api.close();
  }
});

Deno.test("three replicas racing on an empty namespace converge on one CA", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    const replicas = await Promise.all(
      [1, 2, 3].map(() => startSentry({ args: sentryArgs(kubeconfig, ["--config", ""]) })),
    );
    try {
      const ca = secretPem(api, "ca.crt");
      assert.ok(ca.includes("BEGIN CERTIFICATE"));
      for (const replica of replicas) {
        // Each replica's serving certificate chains to the one stored CA (TLS would fail otherwise).
        await assert.rejects(
          signOnce(replica.grpcPort, ca, work),
          (error: { code: number; details: string }) =>
            error.code === 7 && /token/i.test(error.details),
        );
      }
      const posts = api.requests.filter((r) =>
        r.method === "POST" && r.path.endsWith(`/namespaces/${NS}/secrets`)
      );
      assert.ok(posts.length >= 1 && posts.length <= 3, `${posts.length} creates`);
      assert.equal(replicas.filter((r) => /stored the new trust bundle/.test(r.logs())).length, 1);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
    }
  } finally {
    await api.close();
  }
});

Deno.test("a Helm-style pre-filled Secret is used and left intact; ConfigMap drift is repaired", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    const dir = await tempDir();
    await opensslBundle(dir);
    const data: Record<string, string> = {};
    for (const file of ["ca.crt", "issuer.crt", "issuer.key"]) {
      data[file] = Buffer.from(await Deno.readTextFile(join(dir, file))).toString("base64");
    }
    api.put("secrets", NS, {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: NAME, namespace: NS },
      data,
    });
    api.put("configmaps", NS, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: NAME, namespace: NS },
      data: { "ca.crt": "-----BEGIN CERTIFICATE-----\nstale\n-----END CERTIFICATE-----\n" },
    });
    const before = structuredClone(stored(api, "secrets"));
    const sentry = await startSentry({ args: sentryArgs(kubeconfig, ["--config", ""]) });
    try {
      assert.deepEqual(
        stored(api, "secrets")?.data,
        before?.data,
        "the Secret is never rewritten",
      );
      assert.equal(
        stored(api, "secrets")?.metadata?.resourceVersion,
        before?.metadata?.resourceVersion,
      );
      assert.equal(
        stored(api, "configmaps")?.data?.["ca.crt"],
        await Deno.readTextFile(join(dir, "ca.crt")),
      );
      assert.match(sentry.logs(), /repaired ConfigMap dapr-system\/dapr-trust-bundle/);
      const served = await new Deno.Command("openssl", {
        args: ["s_client", "-connect", `127.0.0.1:${sentry.grpcPort}`, "-showcerts"],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).output();
      assert.ok(
        new TextDecoder().decode(served.stdout).includes(
          (await Deno.readTextFile(join(dir, "issuer.crt"))).trim(),
        ),
      );
      assert.ok(work);
    } finally {
      await sentry.stop();
    }
  } finally {
    await api.close();
  }
});

Deno.test("anchors in the ConfigMap without a Secret are never silently replaced; the refusal names the command that does it on purpose", async () => {
  const { api, kubeconfig } = await setup();
  try {
    const oldAnchors = "-----BEGIN CERTIFICATE-----\nsomething\n-----END CERTIFICATE-----\n";
    api.put("configmaps", NS, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: NAME, namespace: NS },
      data: { "ca.crt": oldAnchors },
    });
    let refusal = "";
    await assert.rejects(
      startSentry({ args: sentryArgs(kubeconfig, ["--config", ""]), readyTimeoutMs: 8000 }),
      (error: Error) => {
        refusal = error.message;
        return /does not replace a CA silently/.test(error.message);
      },
    );
    assert.equal(stored(api, "secrets"), undefined, "nothing was created");
    // The command the message names replaces the CA on purpose: run it as written.
    const command = /sentry (init --store k8s --namespace \S+ --trust-domain \S+ --force)/.exec(
      refusal,
    );
    assert.ok(command, refusal);
    const init = await runSentry([...command[1].split(" "), "--kubeconfig", kubeconfig]);
    assert.equal(init.code, 0, init.stderr);
    const anchors = secretPem(api, "ca.crt");
    assert.match(anchors, /BEGIN CERTIFICATE/);
    assert.equal(stored(api, "configmaps")?.data?.["ca.crt"], anchors, "ConfigMap republished");
    const sentry = await startSentry({ args: sentryArgs(kubeconfig, ["--config", ""]) });
    await sentry.stop();
  } finally {
    await api.close();
  }
});

Deno.test("a rotated Secret and a kubectl-patched Configuration reach the running server", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    api.put("configurations", NS, configuration("1h"));
    const sentry = await startSentry({ args: sentryArgs(kubeconfig) });
    const anchors = secretPem(api, "ca.crt");
    try {
      // The Configuration, edited as the mTLS guide says (kubectl), changes the next TTL.
      const jwtToken = appPodToken(api);
      const sign = () =>
        signOnce(sentry.grpcPort, anchors, work, {
          id: "myapp",
          token: jwtToken,
          tokenValidator: 2,
        });
      const lifetime = async () => Number((await sign()).validUntil.seconds) - Date.now() / 1000;
      assert.ok(Math.abs(await lifetime() - 3600) < 5);
      await kubectl(kubeconfig, [
        "patch",
        "configurations.dapr.io",
        "daprsystem",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        '{"spec":{"mtls":{"workloadCertTTL":"25s"}}}',
      ]);
      await eventually("TTL 25s", async () => Math.abs(await lifetime() - 25) < 3);

      // The KUBERNETES validator took the identity from the pod: spiffe://public/ns/default/myapp.
      const chain = (await sign()).workloadCertificate.toString();
      const text = await new Deno.Command("openssl", {
        args: ["x509", "-noout", "-ext", "subjectAltName"],
        stdin: "piped",
        stdout: "piped",
      })
        .spawn();
      const writer = text.stdin.getWriter();
      await writer.write(new TextEncoder().encode(chain));
      await writer.close();
      assert.match(
        new TextDecoder().decode((await text.output()).stdout),
        /URI:spiffe:\/\/public\/ns\/default\/myapp/,
      );

      // Rotate the Secret with a new bundle (same as an operator's kubectl apply).
      const dir = await tempDir();
      await opensslBundle(dir);
      const data: Record<string, string> = {};
      for (const file of ["ca.crt", "issuer.crt", "issuer.key"]) {
        data[file] = Buffer.from(await Deno.readTextFile(join(dir, file))).toString("base64");
      }
      const current = api.get("secrets", NS, NAME)!;
      api.put("secrets", NS, { ...current, data });
      const newAnchors = await Deno.readTextFile(join(dir, "ca.crt"));
      await eventually("the new issuer is served", async () => {
        try {
          const response = await signOnce(sentry.grpcPort, newAnchors, work, {
            id: "myapp",
            token: jwtToken,
            tokenValidator: 2,
          });
          return response.workloadCertificate.toString().includes(
            (await Deno.readTextFile(join(dir, "issuer.crt"))).trim(),
          );
        } catch {
          return false;
        }
      });
      await eventually(
        "the ConfigMap follows the Secret",
        () => stored(api, "configmaps")?.data?.["ca.crt"] === newAnchors,
      );
    } finally {
      await sentry.stop();
    }
  } finally {
    await api.close();
  }
});

Deno.test("the API down at start is waited for; an outage mid-run keeps signing", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    await api.setDown(true, "unavailable");
    setTimeout(() => void api.setDown(false), 2000);
    const sentry = await startSentry({ args: sentryArgs(kubeconfig, ["--config", ""]) });
    try {
      // The client's retries and the start-up retry bridged the 2 s outage; nothing failed.
      assert.ok(sentry.startupMs > 1500, `started after ${sentry.startupMs} ms`);
      assert.ok(secretPem(api, "ca.crt").includes("BEGIN CERTIFICATE"));
      const anchors = secretPem(api, "ca.crt");
      await api.setDown(true, "unavailable");
      // Signing does not need the API for the bundle; the validator refusal proves the server answers.
      await assert.rejects(
        signOnce(sentry.grpcPort, anchors, work),
        (error: { code: number }) => error.code === 7,
      );
      const health = await fetch(`http://127.0.0.1:${sentry.healthPort}/healthz`);
      await health.body?.cancel();
      assert.equal(health.status, 200);
      await api.setDown(false);
    } finally {
      await sentry.stop();
    }
  } finally {
    await api.close();
  }
});

Deno.test("init, expiry and renew work on the Kubernetes store", async () => {
  const { api, kubeconfig } = await setup();
  const args = ["--store", "k8s", "--namespace", NS, "--kubeconfig", kubeconfig];
  try {
    const init = await runSentry([
      "init",
      ...args,
      "--trust-domain",
      "cluster.local",
      "--keep-root-key",
    ]);
    assert.equal(init.code, 0, init.stderr);
    assert.ok(secretPem(api, "ca.key").includes("PRIVATE KEY"), "the root key is kept on request");
    assert.equal(stored(api, "configmaps")?.data?.["ca.crt"], secretPem(api, "ca.crt"));
    const again = await runSentry(["init", ...args]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already holds a trust bundle/);
    const expiry = await runSentry(["expiry", ...args, "--warn", "30d", "--json"]);
    assert.equal(expiry.code, 0, expiry.stderr);
    assert.equal(JSON.parse(expiry.stdout).ok, true);
    const issuerBefore = secretPem(api, "issuer.crt");
    const versionBefore = stored(api, "secrets")?.metadata?.resourceVersion;
    const renew = await runSentry(["renew", ...args]);
    assert.equal(renew.code, 0, renew.stderr);
    assert.notEqual(secretPem(api, "issuer.crt"), issuerBefore);
    assert.notEqual(stored(api, "secrets")?.metadata?.resourceVersion, versionBefore);
    const put = api.requests.filter((r) =>
      r.method === "PUT" && r.path.endsWith(`/secrets/${NAME}`)
    );
    assert.equal(put.length, 1, "one compare-and-swap update");
  } finally {
    await api.close();
  }
});

Deno.test("a burst beyond --max-concurrent-requests is told to retry, the rest is served", async () => {
  const { api, work, kubeconfig } = await setup();
  try {
    const sentry = await startSentry({
      args: sentryArgs(kubeconfig, ["--config", "", "--max-concurrent-requests", "2"]),
    });
    try {
      const token = appPodToken(api);
      api.setLatency(400); // slow TokenReviews keep requests in progress
      const anchors = secretPem(api, "ca.crt");
      const results = await Promise.all(
        Array.from(
          { length: 8 },
          () =>
            signOnce(sentry.grpcPort, anchors, work, { id: "myapp", token, tokenValidator: 2 })
              .then(
                () => "OK",
                (error: { code: number; details: string }) => `${error.code}: ${error.details}`,
              ),
        ),
      );
      api.setLatency(0);
      const busy = results.filter((r) => r.startsWith("8: sentry is busy"));
      const ok = results.filter((r) => r === "OK");
      assert.ok(busy.length > 0, `no RESOURCE_EXHAUSTED in ${JSON.stringify(results)}`);
      assert.ok(ok.length >= 2, `too few served: ${JSON.stringify(results)}`);
      assert.equal(busy.length + ok.length, results.length, JSON.stringify(results));
      const metrics = await (await fetch(`http://127.0.0.1:${sentry.metricsPort}/metrics`)).text();
      assert.match(
        metrics,
        new RegExp(`dapr_sentry_cert_sign_failure_total\\{reason="busy"\\} ${busy.length}`),
      );
    } finally {
      await sentry.stop();
    }
  } finally {
    await api.close();
  }
});
