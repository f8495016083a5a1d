/**
 * Shared parts of the root-rotation end-to-end tests (tests/e2e/rotation*_test.ts), which run
 * the real server with short windows: a root made by `sentry init --root-ttl 2m` (inside the
 * default trigger window at once), `--rotation-propagation-window 6s`,
 * `--rotation-check-interval 1s` and workloadCertTTL 3s. Here: those settings, PEM splitting,
 * the rotation metric, a recorder of store snapshots (for timelines and for "exactly one new
 * root"), signing until the issuer switches, the fs store's rotation-* files, and the
 * Kubernetes (fake API server) and Vault (fake) setups.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { FakeVault } from "../fakes/vault.ts";
import { eventually } from "./eventually.ts";
import { type SignCertificateResponse, signOnce } from "./grpc_client.ts";
import { metricsText } from "./metrics.ts";
import {
  type RunningSentry,
  runSentry,
  type StartOptions,
  startSentry,
  tempDir,
} from "./sentry_process.ts";

/** The propagation window the tests run with (`--rotation-propagation-window 6s`). */
export const PROPAGATION_MS = 6_000;
/** Workload certificate TTL of the tests' Configuration. */
export const WORKLOAD_TTL = "3s";
/** The rotation flags of every test server: on, 6 s window, 1 s checks. */
export const ROTATION_FLAGS = [
  "--rotation-enabled",
  "-rotation-propagation-window=6s",
  "-rotation-check-interval",
  "1s",
];
/** Dapr's rotation file names beside the bundle (fs store) and field names (Vault store). */
export const ROTATION_FILES = [
  "rotation-state.json",
  "rotation-ca.crt",
  "rotation-issuer.crt",
  "rotation-issuer.key",
];
/** A self-hosted Configuration file with workloadCertTTL 3s and no clock skew. */
export const CONFIG_YAML =
  "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: default\n" +
  `spec:\n  mtls:\n    enabled: true\n    workloadCertTTL: "${WORKLOAD_TTL}"\n` +
  '    allowedClockSkew: "0s"\n';

const CERTIFICATES = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g;

/** The PEM CERTIFICATE blocks of `pem`, in order. */
export const certificates = (pem: string): string[] => pem.match(CERTIFICATES) ?? [];

/** The first certificate of a PEM text (fails when there is none). */
export function firstCertificate(pem: string): string {
  const [first] = certificates(pem);
  assert.ok(first, "a PEM CERTIFICATE block");
  return first;
}

/** The issuer certificate of a signed chain (the PEM block after the leaf). */
export const issuerOf = (chainPem: string): string | undefined => certificates(chainPem)[1];

/** The trust anchors of a SignCertificate response, as one PEM text. */
export const anchorsOf = (response: SignCertificateResponse): string =>
  response.trustChainCertificates.map((anchor) => anchor.toString()).join("");

/** NotAfter of the first certificate of `pem`, in epoch milliseconds. */
export const notAfterMs = (pem: string): number =>
  new Date(new X509Certificate(firstCertificate(pem)).validTo).getTime();

/**
 * `--rotation-trigger-window` that makes a rotation of the root in `rootPem` due `inMs` from
 * now (whole seconds, so it is due at most a second earlier or later).
 */
export function triggerWindowDueIn(rootPem: string, inMs: number): string {
  const seconds = Math.floor((notAfterMs(rootPem) - Date.now() - inMs) / 1000);
  assert.ok(seconds > 0, `the root expires too soon to delay the rotation by ${inMs} ms`);
  return `${seconds}s`;
}

/** `dapr_sentry_rootcert_rotation_total{phase=...}` of a server, or 0 when it is absent. */
export async function rotations(metricsPort: number, phase: string): Promise<number> {
  const text = await metricsText(metricsPort);
  const name = `dapr_sentry_rootcert_rotation_total{phase="${phase}"}`;
  const line = text.split("\n").find((candidate) => candidate.startsWith(name + " "));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** How many lines of `logs` match `pattern`. */
export const countLines = (logs: string, pattern: RegExp): number =>
  logs.split("\n").filter((line) => pattern.test(line)).length;

/** One value a {@link Recorder} saw change, `atMs` after it started. */
export interface Change<T> {
  atMs: number;
  value: T;
}

/**
 * Polls `probe` every `intervalMs` (100 ms) from {@link start} to {@link stop} and keeps each
 * value that differs (by JSON) from the one before it: what the store went through, in order.
 */
export class Recorder<T> {
  readonly #probe: () => T | Promise<T>;
  readonly #intervalMs: number;
  readonly #changes: Change<T>[] = [];
  #startedAt = 0;
  #last = "";
  #running?: Promise<void>;
  #stopped = false;

  /** Nothing is polled before {@link start}. */
  constructor(probe: () => T | Promise<T>, intervalMs = 100) {
    this.#probe = probe;
    this.#intervalMs = intervalMs;
  }

  /** Takes the first sample, then polls in the background. */
  async start(): Promise<void> {
    this.#startedAt = Date.now();
    await this.#sample();
    this.#running = this.#loop();
  }

  async #sample(): Promise<void> {
    const value = await this.#probe();
    const key = JSON.stringify(value);
    if (this.#changes.length > 0 && key === this.#last) return;
    this.#last = key;
    this.#changes.push({ atMs: Date.now() - this.#startedAt, value });
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      await new Promise((resolve) => setTimeout(resolve, this.#intervalMs));
      await this.#sample();
    }
  }

  /** The changes so far. */
  get changes(): readonly Change<T>[] {
    return this.#changes;
  }

  /** Milliseconds since {@link start}. */
  elapsedMs(): number {
    return Date.now() - this.#startedAt;
  }

  /** Takes a last sample and stops; the changes seen. */
  async stop(): Promise<Change<T>[]> {
    this.#stopped = true;
    await this.#running;
    await this.#sample();
    return [...this.#changes];
  }
}

/** The successive distinct values of `field` among `changes` (consecutive repeats merged). */
export function sequence<T, V>(changes: readonly Change<T>[], field: (value: T) => V): V[] {
  const values: V[] = [];
  for (const { value } of changes) {
    const next = field(value);
    if (values.length === 0 || JSON.stringify(values.at(-1)) !== JSON.stringify(next)) {
      values.push(next);
    }
  }
  return values;
}

/** Prints when `label` changed among `changes` (seconds since the recorder started). */
export function printTimeline<T>(
  title: string,
  changes: readonly Change<T>[],
  label: (value: T) => string,
): void {
  const lines: string[] = [];
  let last = "";
  for (const change of changes) {
    const text = label(change.value);
    if (text === last) continue;
    last = text;
    lines.push(`  +${(change.atMs / 1000).toFixed(1)}s ${text}`);
  }
  console.log(`${title}\n${lines.join("\n")}`);
}

/** A short name for one root among `roots` (old, new), else "other". */
export function rootNames(pem: string, roots: Record<string, string>): string {
  const names = certificates(pem).map((certificate) =>
    Object.entries(roots).find(([, root]) => root === certificate)?.[0] ?? "other"
  );
  return names.length > 0 ? names.join("+") : "-";
}

/**
 * Calls `sign` every 250 ms until a certificate comes from an issuer other than `oldIssuer`;
 * asserts that the old issuer signed before and that none came from another one before the
 * propagation window after `distributedAt` ended. Returns that certificate chain.
 */
export async function signUntilSwitched(
  sign: () => Promise<string>,
  oldIssuer: string,
  distributedAt: Date,
  logs: () => string,
): Promise<string> {
  const deadline = Date.now() + 30_000;
  let oldSeen = 0;
  while (Date.now() < deadline) {
    const chain = await sign();
    const receivedAt = Date.now();
    if (issuerOf(chain) === oldIssuer) {
      oldSeen++;
    } else {
      assert.ok(
        receivedAt >= distributedAt.getTime() + PROPAGATION_MS,
        `new issuer only after the propagation window (${
          receivedAt - distributedAt.getTime()
        } ms after distributing began)`,
      );
      assert.ok(oldSeen > 0, "the old issuer signed while distributing");
      return chain;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`signing did not switch to the new issuer:\n${logs()}`);
}

// ------------------------------------------------------------------------------ fs store

/** The text of `name` in `dir`. */
export const read = (dir: string, name: string): Promise<string> =>
  Deno.readTextFile(join(dir, name));

/** The text of `name` in `dir`, or undefined when it is absent. */
export async function readIfExists(dir: string, name: string): Promise<string | undefined> {
  try {
    return await read(dir, name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Whether `name` exists in `dir`. */
export const exists = async (dir: string, name: string): Promise<boolean> =>
  (await readIfExists(dir, name)) !== undefined;

/** `rotation-state.json` as written (Dapr's field names). */
export async function rotationState(dir: string): Promise<Record<string, string>> {
  return JSON.parse(await read(dir, "rotation-state.json"));
}

/** The rotation phase stored in `dir` ("none" without a rotation-state.json). */
export async function fsPhase(dir: string): Promise<string> {
  const text = await readIfExists(dir, "rotation-state.json");
  if (text === undefined) return "none";
  try {
    return JSON.parse(text).phase;
  } catch {
    return "none"; // read while being replaced
  }
}

/**
 * A credentials directory with a root (and issuer) that expire in two minutes, made by
 * `sentry init`, and a Configuration file beside it with workloadCertTTL 3s.
 */
export async function expiringBundle(): Promise<{ dir: string; config: string }> {
  const dir = await tempDir("sentry-rotation-");
  const init = await runSentry([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    "cluster.local",
    "--root-ttl",
    "2m",
  ]);
  assert.equal(init.code, 0, init.stderr);
  const config = join(dir, "..", `${dir.split("/").pop()}-config.yaml`);
  await Deno.writeTextFile(config, CONFIG_YAML);
  return { dir, config };
}

/** Starts the real server on `dir` with {@link ROTATION_FLAGS} (and `extra` flags). */
export function startRotating(
  dir: string,
  config: string,
  extra: string[] = [],
): Promise<RunningSentry> {
  return startSentry({ dir, args: [`--config=${config}`, ...ROTATION_FLAGS, ...extra] });
}

/** Waits for the distributing phase: ca.crt old + new, the rotation files in place. */
export async function waitForDistributing(dir: string): Promise<void> {
  await eventually(
    "rotation-state.json (distributing)",
    async () => (await fsPhase(dir)) === "distributing",
  );
  for (const name of ROTATION_FILES) assert.ok(await exists(dir, name), `${name} is written`);
  assert.equal(certificates(await read(dir, "ca.crt")).length, 2, "ca.crt: old + new roots");
}

/**
 * Waits for completion: ca.crt holds only the new root, the rotation files are gone. The
 * state file is removed first and the other rotation files just after it, so all of them are
 * part of the wait (checking them once the state file was gone raced with their removal).
 */
export async function waitForComplete(dir: string, newRoot: string): Promise<void> {
  const remaining = async () => {
    const left = [];
    for (const name of ROTATION_FILES) if (await exists(dir, name)) left.push(name);
    return left;
  };
  await eventually(
    "rotation complete (ca.crt = the new root, no rotation file left)",
    async () => (await read(dir, "ca.crt")) === newRoot && (await remaining()).length === 0,
    20_000,
  );
  assert.deepEqual(await remaining(), []);
}

// ---------------------------------------------------------------------- Kubernetes store

/** Sentry's namespace in the Kubernetes tests. */
export const KUBE_NS = "dapr-system";
/** The Secret and ConfigMap of the trust bundle. */
export const TRUST_BUNDLE = "dapr-trust-bundle";

/** What the fake API server holds of the trust bundle at one moment. */
export interface KubeSnapshot {
  /** The Secret's `ca.crt`. */
  anchors: string;
  /** The first certificate of the Secret's `issuer.crt`. */
  issuer: string;
  /** The ConfigMap's `ca.crt`. */
  published: string;
  /** The Secret's `rotation.*` keys, sorted. */
  rotationKeys: string[];
  /** `rotation.phase` ("none" when absent). */
  phase: string;
  /** `rotation.new-ca.crt` ("" when absent). */
  newRoot: string;
}

type Data = Record<string, string> | undefined;

/** The Secret's value of `key`, decoded ("" when absent). */
export function secretText(api: FakeKubeApiServer, key: string): string {
  const data = (api.get("secrets", KUBE_NS, TRUST_BUNDLE) as { data?: Data } | undefined)?.data;
  return Buffer.from(data?.[key] ?? "", "base64").toString("utf8");
}

/** The trust bundle's Secret and ConfigMap now (one synchronous read of the fake). */
export function kubeSnapshot(api: FakeKubeApiServer): KubeSnapshot {
  const secret = (api.get("secrets", KUBE_NS, TRUST_BUNDLE) as { data?: Data } | undefined)?.data;
  const configMap = api.get("configmaps", KUBE_NS, TRUST_BUNDLE) as { data?: Data } | undefined;
  const issuer = secretText(api, "issuer.crt");
  return {
    anchors: secretText(api, "ca.crt"),
    issuer: certificates(issuer)[0] ?? "",
    published: configMap?.data?.["ca.crt"] ?? "",
    rotationKeys: Object.keys(secret ?? {}).filter((key) => key.startsWith("rotation.")).sort(),
    phase: secretText(api, "rotation.phase") || "none",
    newRoot: secretText(api, "rotation.new-ca.crt"),
  };
}

/** A fake API server with an expiring trust bundle, a Configuration and an app pod. */
export interface KubeRotationSetup {
  api: FakeKubeApiServer;
  kubeconfig: string;
  work: string;
  /** A projected token of pod default/app-pod (app id `myapp`) for the KUBERNETES validator. */
  token: string;
  /** The server flags for the Secret store, with {@link ROTATION_FLAGS} and `extra`. */
  args(extra?: string[]): string[];
  /** Removes everything. */
  close(): Promise<void>;
}

/**
 * Starts the fake API server, stores the Configuration `daprsystem` (workloadCertTTL 3s), runs
 * `sentry init --store k8s --root-ttl 2m` (Secret and ConfigMap) and creates an app pod.
 */
export async function kubeRotationSetup(): Promise<KubeRotationSetup> {
  const api = await FakeKubeApiServer.start();
  const work = await tempDir("sentry-rotation-k8s-");
  const kubeconfig = await api.writeKubeconfig(join(work, "kubeconfig"));
  const storeArgs = ["--store", "k8s", "--namespace", KUBE_NS, "--kubeconfig", kubeconfig];
  api.put("configurations", KUBE_NS, {
    apiVersion: "dapr.io/v1alpha1",
    kind: "Configuration",
    metadata: { name: "daprsystem", namespace: KUBE_NS },
    spec: { mtls: { enabled: true, workloadCertTTL: WORKLOAD_TTL, allowedClockSkew: "0s" } },
  });
  const init = await runSentry([
    "init",
    ...storeArgs,
    "--trust-domain",
    "cluster.local",
    "--root-ttl",
    "2m",
  ]);
  assert.equal(init.code, 0, init.stderr);
  api.put("pods", "default", {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "app-pod", namespace: "default", annotations: { "dapr.io/app-id": "myapp" } },
    spec: { serviceAccountName: "app-sa", containers: [] },
  });
  const token = api.serviceAccountJwt({
    namespace: "default",
    serviceAccount: "app-sa",
    podName: "app-pod",
    audiences: ["dapr.io/sentry", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"],
  });
  return {
    api,
    kubeconfig,
    work,
    token,
    args: (
      extra = [],
    ) => [...storeArgs, "--trust-domain", "cluster.local", ...ROTATION_FLAGS, ...extra],
    async close() {
      await api.close();
      await Deno.remove(work, { recursive: true });
    },
  };
}

/** SignCertificate for the app pod (KUBERNETES validator), trusting the Secret's anchors now. */
export function kubeSign(
  setup: KubeRotationSetup,
  sentry: RunningSentry,
): Promise<SignCertificateResponse> {
  return signOnce(sentry.grpcPort, secretText(setup.api, "ca.crt"), setup.work, {
    id: "myapp",
    token: setup.token,
    tokenValidator: 2,
  });
}

// --------------------------------------------------------------------------- Vault store

/** The KV path of the trust bundle in the Vault tests. */
export const VAULT_PATH = "dapr/sentry/trust-bundle";

/** A fake Vault with an expiring trust bundle and a Configuration file. */
export interface VaultRotationSetup {
  vault: FakeVault;
  work: string;
  /** The fields of the latest version of the bundle's secret. */
  fields(): Record<string, string>;
  /** Starts the server on the Vault store with {@link ROTATION_FLAGS}. */
  start(options?: StartOptions): Promise<RunningSentry>;
  close(): Promise<void>;
}

/** Starts the fake Vault and runs `sentry init --store vault --root-ttl 2m`. */
export async function vaultRotationSetup(): Promise<VaultRotationSetup> {
  const vault = await FakeVault.start();
  const work = await tempDir("sentry-rotation-vault-");
  const config = join(work, "config.yaml");
  await Deno.writeTextFile(config, CONFIG_YAML);
  const env = { VAULT_TOKEN: vault.rootToken };
  const storeArgs = ["--store", "vault", "--vault-addr", vault.url];
  const init = await runSentry(
    ["init", ...storeArgs, "--trust-domain", "cluster.local", "--root-ttl", "2m"],
    { env },
  );
  assert.equal(init.code, 0, init.stderr);
  return {
    vault,
    work,
    fields: () => (vault.read(VAULT_PATH)?.data ?? {}) as Record<string, string>,
    start: (options = {}) =>
      startSentry({
        ...options,
        env: { ...env, ...options.env },
        args: [
          ...storeArgs,
          "--vault-poll-interval",
          "200ms",
          `--config=${config}`,
          ...ROTATION_FLAGS,
          ...(options.args ?? []),
        ],
      }),
    async close() {
      await vault.close();
      await Deno.remove(work, { recursive: true });
    },
  };
}

// ------------------------------------------------------------------------------- replicas

/** The rotation becomes due this long after the replicas are started. */
const REPLICAS_DUE_IN_MS = 6_000;

/** What a store holds at one moment, for {@link threeReplicasRotateOnce}. */
export interface ReplicaSnapshot {
  /** The rotation phase ("none" without one). */
  phase: string;
  /** The stored trust anchors. */
  anchors: string;
  /** The stored new root of a rotation in progress ("" when none). */
  newRoot: string;
  /** The stored new issuer of a rotation in progress ("" when none). */
  newIssuer: string;
  /** The published copy of the anchors (the ConfigMap), when the store has one. */
  published?: string;
}

/** One store shared by three replicas. */
export interface ReplicaStore {
  /** For the timeline. */
  name: string;
  /** The stored root before the rotation. */
  oldRoot: string;
  /** Starts one replica with `extra` flags (and {@link ROTATION_FLAGS}). */
  start(extra: string[]): Promise<RunningSentry>;
  snapshot(): Promise<ReplicaSnapshot>;
  /** SignCertificate on `replica`, trusting `anchors`. */
  sign(replica: RunningSentry, anchors: string): Promise<SignCertificateResponse>;
}

/** The distinct certificates among `pems` other than `oldRoot`. */
function newRootsIn(pems: string[], oldRoot: string): string[] {
  return [...new Set(pems.flatMap(certificates).filter((root) => root !== oldRoot))];
}

/** The sum of a phase's rotation metric over `replicas`, with the per-replica counts. */
async function phaseCounts(replicas: RunningSentry[], phase: string) {
  const counts = await Promise.all(replicas.map((r) => rotations(r.metricsPort, phase)));
  return { sum: counts.reduce((total, count) => total + count, 0), counts };
}

/** Waits until every replica answers with the new root alone and the new issuer. */
async function allServeNewRoot(
  store: ReplicaStore,
  replicas: RunningSentry[],
  roots: { old: string; new: string },
  newIssuer: string,
): Promise<void> {
  for (const [index, replica] of replicas.entries()) {
    let last = "";
    await eventually(`replica ${index + 1} serves the new root alone`, async () => {
      const response = await store.sign(replica, roots.new);
      const chain = response.workloadCertificate.toString();
      last = `anchors ${rootNames(anchorsOf(response), roots)}, ` +
        `issuer ${issuerOf(chain) === newIssuer ? "new" : "other"}`;
      return anchorsOf(response) === roots.new && issuerOf(chain) === newIssuer;
    }).catch((error) => {
      throw new Error(`${error.message} (last answer: ${last})`);
    });
  }
}

/**
 * Three replicas on `store`, started together with a rotation due about 6 s later (so that all
 * three check when it becomes due): the store, sampled every 100 ms through the whole cycle,
 * holds exactly one new root; all three end serving it alone; each phase's metric summed over
 * the replicas is 1 and one replica logs the start. Prints the timeline (and, on failure, every
 * replica's logs).
 */
export async function threeReplicasRotateOnce(store: ReplicaStore): Promise<void> {
  const { oldRoot } = store;
  const trigger = triggerWindowDueIn(oldRoot, REPLICAS_DUE_IN_MS);
  const recorder = new Recorder(() => store.snapshot());
  await recorder.start();
  const replicas: RunningSentry[] = [];
  let roots: Record<string, string> = { old: oldRoot };
  const timeline = (title: string, changes: readonly Change<ReplicaSnapshot>[]) =>
    printTimeline(title, changes, (s) =>
      `${s.phase}, anchors = ${rootNames(s.anchors, roots)}` +
      (s.published === undefined ? "" : `, published = ${rootNames(s.published, roots)}`));
  try {
    await Promise.all([1, 2, 3].map(async () => {
      replicas.push(await store.start(["--rotation-trigger-window", trigger]));
    }));
    assert.equal(
      (await store.snapshot()).phase,
      "none",
      `the rotation began before all three replicas were up (${recorder.elapsedMs()} ms)`,
    );
    await eventually("distributing", async () => (await store.snapshot()).phase !== "none", 15_000);
    const { newRoot, newIssuer } = await store.snapshot();
    assert.ok(newRoot && newIssuer, "a new root and issuer are stored while distributing");
    roots = { old: oldRoot, new: newRoot };
    const storedRoots = () => [
      ...new Set(
        recorder.changes.map((c) => c.value.newRoot).filter((root) => root),
      ),
    ];
    await eventually(
      "rotation complete (anchors = the new root)",
      async () => {
        const count = storedRoots().length;
        assert.ok(count <= 1, `${count} distinct new roots were stored (sampled every 100 ms)`);
        const now = await store.snapshot();
        return now.phase === "none" && now.anchors === newRoot;
      },
      25_000,
    );
    await allServeNewRoot(store, replicas, { old: oldRoot, new: newRoot }, newIssuer);
    // Two more checks of every replica: nothing else is written, nothing else is counted.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const changes = await recorder.stop();
    timeline(`${store.name}, three replicas, one cycle:`, changes);

    assert.equal(storedRoots().length, 1, `${storedRoots().length} distinct new roots were stored`);
    assert.deepEqual(
      newRootsIn(changes.map((c) => c.value.anchors), oldRoot),
      [newRoot],
      "the stored anchors only ever held the one new root",
    );
    assert.deepEqual(sequence(changes, (s) => s.phase), [
      "none",
      "distributing",
      "signing",
      "none",
    ]);
    if (changes[0].value.published !== undefined) {
      publishedInTime(changes, { old: oldRoot, new: newRoot });
    }
    const logs = replicas.map((replica) => replica.logs()).join("\n");
    assert.equal(countLines(logs, /root rotation started/), 1, "one replica started it");
    for (const phase of ["distributing", "signing", "complete"]) {
      const { sum, counts } = await phaseCounts(replicas, phase);
      assert.equal(sum, 1, `${phase} counted once over the replicas (each: ${counts.join(", ")})`);
    }
  } catch (error) {
    timeline(`${store.name}, three replicas (failed):`, await recorder.stop());
    for (const [index, replica] of replicas.entries()) {
      console.log(`--- replica ${index + 1}:\n${replica.logs()}`);
    }
    throw error;
  } finally {
    await recorder.stop();
    const codes = await Promise.all(replicas.map((replica) => replica.stop()));
    assert.deepEqual(codes, replicas.map(() => 0), "every replica exits 0 on SIGTERM");
  }
}

/**
 * The published anchors (ConfigMap) carry old + the new root when signing switches and the new
 * root alone at the end. A root of a replica whose Secret write lost may show there for a
 * moment (each replica publishes ahead of its compare-and-swap on the Secret): logged.
 */
function publishedInTime(
  changes: readonly Change<ReplicaSnapshot>[],
  roots: { old: string; new: string },
): void {
  const switched = changes.find((change) => change.value.phase === "signing");
  assert.equal(switched?.value.published, roots.old + roots.new, "published at the switch");
  assert.equal(changes.at(-1)?.value.published, roots.new, "published at the end");
  const foreign = newRootsIn(changes.map((c) => c.value.published ?? ""), roots.old)
    .filter((root) => root !== roots.new);
  if (foreign.length > 0) {
    console.log(`  (the published anchors held ${foreign.length} losing replica root(s) briefly)`);
  }
}
