/**
 * Paths of the real-Dapr programs built from Dapr's published Go module by
 * tests/dapr/build.sh (daprd, Dapr's sentry and other control-plane programs, the compiled
 * sentry integration suite, the grpc-go load generator, the Helm CLI and where Dapr's chart is). The build is cached outside the tree and skipped when its inputs
 * are unchanged, so calling this from several test files costs one quick check each.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const BUILD_SCRIPT = fileURLToPath(new URL("../dapr/build.sh", import.meta.url));

/** Where each real-Dapr program lives once built. */
export interface DaprBinaries {
  /** The directory holding them all. */
  dir: string;
  /** Dapr's sidecar. */
  daprd: string;
  /** Dapr's own sentry. */
  sentry: string;
  /** Dapr's sentry integration cases, compiled (tests/dapr/suite). */
  suite: string;
  /** The grpc-go load generator (tests/dapr/loadgen), when that package exists. */
  loadgen: string;
  /** Verifies served or issued certificates with Go's crypto/tls and crypto/x509 (tests/dapr/tlscheck). */
  tlscheck: string;
  /** Validates a JWT-SVID against a JWKS with go-spiffe's jwtsvid (tests/dapr/jwtcheck). */
  jwtcheck: string;
  /** An OIDC relying party on coreos/go-oidc: discovery, JWKS, verification (tests/dapr/oidccheck). */
  oidccheck: string;
  /** Dapr's placement, scheduler, operator and sidecar injector. */
  placement: string;
  scheduler: string;
  operator: string;
  injector: string;
  /** The Helm CLI (tests/helm/go.mod). */
  helm: string;
  /** Dapr's Helm chart (`charts/dapr` of the pinned Dapr module, read-only). */
  chartDir: string;
}

let built: Promise<DaprBinaries> | undefined;

/** Builds (or finds, cached) the real-Dapr programs; the build's own errors are thrown. */
export function daprBinaries(): Promise<DaprBinaries> {
  built ??= build();
  return built;
}

async function build(): Promise<DaprBinaries> {
  const out = await new Deno.Command("sh", { args: [BUILD_SCRIPT], stderr: "inherit" }).output();
  if (!out.success) {
    throw new Error(`tests/dapr/build.sh failed (exit ${out.code}); its output is above`);
  }
  const dir = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
  return {
    dir,
    daprd: `${dir}/daprd`,
    sentry: `${dir}/sentry`,
    suite: `${dir}/sentry-suite.test`,
    loadgen: `${dir}/loadgen`,
    tlscheck: `${dir}/tlscheck`,
    jwtcheck: `${dir}/jwtcheck`,
    oidccheck: `${dir}/oidccheck`,
    placement: `${dir}/placement`,
    scheduler: `${dir}/scheduler`,
    operator: `${dir}/operator`,
    injector: `${dir}/injector`,
    helm: `${dir}/helm`,
    chartDir: (await Deno.readTextFile(`${dir}/chart-dir`)).trim(),
  };
}
