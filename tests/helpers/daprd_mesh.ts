/**
 * A small mesh of real daprds around one sentry, for the tests that watch invocations through
 * a change of CA (issuer renewal, root rotation): the sentry with the daprds' control-plane
 * trust domain, daprds started and stopped together (their logs printed when the test fails),
 * a short-lived workload certificate Configuration, and a loop in which app A calls app B over
 * a relay that drops the connection after every call — so each call is a new mTLS handshake
 * with the certificates both daprds hold at that moment — recording which issuer each daprd
 * presented and whether the call failed.
 *
 * @module
 */
import { join } from "node:path";
import {
  presentedChain,
  type RunningDaprd,
  startDaprd,
  type TcpRelay,
  type TinyApp,
} from "./daprd.ts";
import { type RunningSentry, startSentry } from "./sentry_process.ts";

/** Sentry's --trust-domain, and the daprds' --control-plane-trust-domain. */
export const TRUST_DOMAIN = "cluster.local";

/** The PEM certificate blocks of a text, each ending in one newline. */
export function pemBlocks(text: string): string[] {
  return (text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [])
    .map((block) => block + "\n");
}

/** The issuer certificate sentry signs with now (the first block of issuer.crt in `dir`). */
export async function currentIssuer(dir: string): Promise<string> {
  return pemBlocks(await Deno.readTextFile(join(dir, "issuer.crt")))[0];
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Stops whatever a test started, in reverse order, even when it failed half way. */
export class Processes {
  #stops: (() => Promise<unknown>)[] = [];
  /** The daprds started, whose logs are printed when the test fails. */
  readonly daprds: RunningDaprd[] = [];
  /** Registers `thing` to be stopped (or closed) by {@link stopAll}; returns it. */
  add<T extends { stop(): Promise<unknown> } | { close(): Promise<unknown> }>(thing: T): T {
    this.#stops.push(() => "stop" in thing ? thing.stop() : thing.close());
    return thing;
  }
  /** Stops everything added, newest first, ignoring failures. */
  async stopAll(): Promise<void> {
    for (const stop of this.#stops.reverse()) await stop().catch(() => {});
  }
}

/** A sentry on `dir` with the test trust domain; all logs are printed when `fn` throws. */
export async function withSentry(
  options: { dir?: string; args?: string[] },
  fn: (sentry: RunningSentry, processes: Processes) => Promise<void>,
): Promise<void> {
  const sentry = await startSentry({
    dir: options.dir,
    args: ["--trust-domain", TRUST_DOMAIN, ...(options.args ?? [])],
  });
  const processes = new Processes();
  let failed = false;
  try {
    await fn(sentry, processes);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    await processes.stopAll();
    await sentry.stop();
    if (failed) {
      console.error(`--- sentry logs ---\n${sentry.logs()}`);
      for (const d of processes.daprds) console.error(`--- daprd ${d.appId} ---\n${d.logs()}`);
    }
  }
}

/** Starts daprd for `appId` against `sentry`, stopped (and its logs shown) by `processes`. */
export async function daprdFor(
  processes: Processes,
  sentry: RunningSentry,
  options: {
    appId: string;
    anchors: string;
    config: string;
    app?: TinyApp;
    internalGrpcPort?: number;
    controlPlaneTrustDomain?: string;
  },
): Promise<RunningDaprd> {
  const daprd = await startDaprd({
    appId: options.appId,
    sentryPort: sentry.grpcPort,
    trustAnchors: options.anchors,
    controlPlaneTrustDomain: options.controlPlaneTrustDomain ?? TRUST_DOMAIN,
    config: options.config,
    appPort: options.app?.port,
    internalGrpcPort: options.internalGrpcPort,
  });
  processes.daprds.push(daprd);
  return processes.add(daprd);
}

/** Sentry Configuration with a short workload certificate lifetime and no back-dating. */
export function shortLivedConfig(ttlSeconds: number): string {
  return `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: short\nspec:\n` +
    `  mtls:\n    enabled: true\n    workloadCertTTL: "${ttlSeconds}s"\n    allowedClockSkew: "0s"\n`;
}

/** One round of the invocation loop: who presented which issuer, and how the call went. */
export interface Round {
  /** Milliseconds since the loop started. */
  at: number;
  /** The issuer certificate each daprd presented just before the call. */
  issuerA: string;
  issuerB: string;
  /** Why the call failed, if it did. */
  error?: string;
}

/** A running invocation loop. */
export interface InvocationLoop {
  /** The rounds so far (grows while the loop runs). */
  readonly rounds: Round[];
  /** Milliseconds since the loop started. */
  elapsed(): number;
  /** Ends the loop after the round in progress. */
  stop(): Promise<void>;
}

/**
 * Starts A -> B calls in a loop (`/v1.0/invoke/appb/method/hello` through daprd A), dropping
 * the relay's connections after each call. A call fails when it throws, or does not answer
 * 200 from app B.
 */
export function startInvocationLoop(
  a: RunningDaprd,
  b: RunningDaprd,
  relay: TcpRelay,
): InvocationLoop {
  const rounds: Round[] = [];
  const started = Date.now();
  const issuerOf = async (daprd: RunningDaprd) =>
    pemBlocks(await presentedChain(daprd.internalGrpcPort))[1];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const [issuerA, issuerB] = await Promise.all([issuerOf(a), issuerOf(b)]);
      let error: string | undefined;
      try {
        const response = await a.invoke("appb", "hello");
        if (
          response.status !== 200 || (JSON.parse(response.body) as { app?: string }).app !== "appb"
        ) {
          error = `${response.status} ${response.body}`;
        }
      } catch (e) {
        error = String(e);
      }
      relay.dropAll();
      rounds.push({ at: Date.now() - started, issuerA, issuerB, error });
    }
  })();
  return {
    rounds,
    elapsed: () => Date.now() - started,
    stop: async () => {
      stopped = true;
      await loop.catch(() => {});
    },
  };
}

/** Which issuer each round saw, as `A/B` labels, and how often each pair occurred. */
export function issuerStates(
  rounds: readonly Round[],
  labels: Record<string, string>,
): { states: string[]; count(state: string): number } {
  const label = (issuer: string) => labels[issuer] ?? "unknown";
  const states = rounds.map((r) => `${label(r.issuerA)}/${label(r.issuerB)}`);
  return { states, count: (state) => states.filter((s) => s === state).length };
}
