/**
 * Three replicas of the real server (the bundled program) on one store, all with
 * `--rotation-enabled` and 1 s checks, and a rotation that becomes due about 6 s after they
 * start (`--rotation-trigger-window` set from the root's NotAfter), so that all three are
 * checking when it does (see {@link threeReplicasRotateOnce}): on one fs directory (one
 * `--issuer-credentials`, three ports) and on one Kubernetes Secret (the fake API server).
 * Sampled every 100 ms through the whole cycle, the stored new root (`rotation-ca.crt`, the
 * Secret's `rotation.new-ca.crt`) takes exactly one value; the ConfigMap `dapr-trust-bundle`
 * carries old + that root at the switch and that root alone at the end; every replica ends
 * serving it alone as its trust anchors (SignCertificate on each port);
 * `dapr_sentry_rootcert_rotation_total{phase}` summed over the three is exactly 1 for each
 * phase, and one replica logs the start. Prints the timelines.
 */
import { signOnce } from "../helpers/grpc_client.ts";
import {
  certificates,
  expiringBundle,
  firstCertificate,
  fsPhase,
  kubeRotationSetup,
  kubeSign,
  kubeSnapshot,
  read,
  readIfExists,
  secretText,
  startRotating,
  threeReplicasRotateOnce,
} from "../helpers/rotation_e2e.ts";
import { startSentry, tempDir } from "../helpers/sentry_process.ts";

Deno.test("three replicas on one fs directory make exactly one new root", async () => {
  const { dir, config } = await expiringBundle();
  const work = await tempDir();
  try {
    await threeReplicasRotateOnce({
      name: "fs store",
      oldRoot: await read(dir, "ca.crt"),
      start: (extra) => startRotating(dir, config, extra),
      snapshot: async () => ({
        phase: await fsPhase(dir),
        anchors: await readIfExists(dir, "ca.crt") ?? "",
        newRoot: await readIfExists(dir, "rotation-ca.crt") ?? "",
        newIssuer: certificates(await readIfExists(dir, "rotation-issuer.crt") ?? "")[0] ?? "",
      }),
      sign: (replica, anchors) => signOnce(replica.grpcPort, anchors, work),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(config);
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("three replicas on one Kubernetes Secret make exactly one new root", async () => {
  const setup = await kubeRotationSetup();
  const { api } = setup;
  try {
    await threeReplicasRotateOnce({
      name: "Kubernetes store (fake API server)",
      oldRoot: secretText(api, "ca.crt"),
      start: (extra) => startSentry({ args: setup.args(extra) }),
      snapshot: () => {
        const now = kubeSnapshot(api);
        const newIssuer = secretText(api, "rotation.new-issuer.crt");
        return Promise.resolve({
          phase: now.phase,
          anchors: now.anchors,
          newRoot: now.newRoot,
          newIssuer: newIssuer ? firstCertificate(newIssuer) : "",
          published: now.published,
        });
      },
      sign: (replica) => kubeSign(setup, replica),
    });
  } finally {
    await setup.close();
  }
});
