/**
 * The one seam for issuing a workload certificate, whatever thread does the work: verify the
 * CSR (proof of possession), then sign its key into Dapr's workload profile. Three ways behind
 * one interface: inline on the event loop, with OpenSSL's work on node:crypto's thread pool,
 * or on a signing worker thread; {@link IssuerRouter} picks one per request. Whatever the way,
 * a failure crosses the seam as {@link CsrError} (the caller's CSR is bad) or
 * {@link SigningError} (the CA cannot sign now); anything else is a fault.
 *
 * @module
 */
import type { TrustBundle } from "../ca/bundle.ts";
import {
  type IssuedChain,
  issuedChain,
  issueWorkloadCertificate,
  issueWorkloadCertificateAsync,
  SigningError,
  type WorkloadTiming,
} from "../ca/signer.ts";
import type { SpiffeId } from "../ca/spiffe.ts";
import { CsrError, decodeCsr, decodeCsrAsync } from "../x509/csr.ts";
import { PoolSigningError, type SigningPool } from "./signing-pool.ts";

/** What to issue: a CSR to verify, the identity to certify, the CA and the clock reading. */
export interface IssueRequest {
  bundle: TrustBundle;
  id: SpiffeId;
  /** The CSR as the caller sent it (PEM). */
  csrPem: Uint8Array;
  timing: WorkloadTiming;
  now: Date;
  /** DNS SANs besides the SPIFFE ID (Dapr's control-plane services); none by default. */
  dnsNames?: readonly string[];
}

export type { IssuedChain };

/**
 * Verifies a CSR and signs its key into a workload certificate. Rejects with
 * {@link CsrError} or {@link SigningError}, or another error for a fault.
 */
export interface WorkloadIssuer {
  issue(request: IssueRequest): Promise<IssuedChain>;
}

/** Everything on the calling thread: the lowest latency for a lone request. */
export const inlineIssuer: WorkloadIssuer = {
  issue({ bundle, id, csrPem, timing, now, dnsNames }) {
    try {
      const spki = decodeCsr(csrPem).subjectPublicKeyInfo;
      return Promise.resolve(
        issuedChain(issueWorkloadCertificate(bundle, id, spki, timing, now, dnsNames)),
      );
    } catch (error) {
      return Promise.reject(error);
    }
  },
};

/** Verification and signature on node:crypto's thread pool; the event loop stays free. */
export const threadPoolIssuer: WorkloadIssuer = {
  async issue({ bundle, id, csrPem, timing, now, dnsNames }) {
    const spki = (await decodeCsrAsync(csrPem)).subjectPublicKeyInfo;
    return issuedChain(
      await issueWorkloadCertificateAsync(bundle, id, spki, timing, now, dnsNames),
    );
  },
};

/** What the issuers need of a {@link SigningPool}. */
export type WorkerPool = Pick<SigningPool, "sign" | "available">;

/** On a signing worker thread of `pool`; the worker's failure kinds become the seam's errors. */
export function workerPoolIssuer(pool: WorkerPool): WorkloadIssuer {
  return {
    async issue({ bundle, id, csrPem, timing, now, dnsNames }) {
      try {
        return await pool.sign(bundle, id, csrPem, timing, now, dnsNames);
      } catch (error) {
        if (!(error instanceof PoolSigningError)) throw error;
        if (error.kind === "csr") throw new CsrError(error.message, { cause: error });
        if (error.kind === "signing") throw new SigningError(error.message, { cause: error });
        throw new Error(error.message, { cause: error });
      }
    },
  };
}

/** Options of {@link IssuerRouter}. */
export interface IssuerRouterOptions {
  /**
   * Whether this request should be verified and signed off the event loop (requests arrive
   * together), or inline (a lone request). Asked once per request.
   */
  offload: () => boolean;
  /** Signing worker threads, when the server has them; used for offloaded requests. */
  pool?: WorkerPool;
  /** Told each time a request was issued on a worker thread (a metric). */
  onWorkerIssue?: () => void;
}

/**
 * Picks the way for each request: offloaded requests go to the worker pool while it is
 * available, else to node:crypto's thread pool; the others are issued inline.
 */
export class IssuerRouter implements WorkloadIssuer {
  readonly #options: IssuerRouterOptions;
  readonly #workers?: WorkloadIssuer;

  /** Routes by `options.offload` and the pool's availability. */
  constructor(options: IssuerRouterOptions) {
    this.#options = options;
    if (options.pool) this.#workers = workerPoolIssuer(options.pool);
  }

  /** Issues `request` the way this moment calls for. */
  async issue(request: IssueRequest): Promise<IssuedChain> {
    if (!this.#options.offload()) return await inlineIssuer.issue(request);
    if (this.#workers && this.#options.pool?.available) {
      const issued = await this.#workers.issue(request);
      this.#options.onWorkerIssue?.();
      return issued;
    }
    return await threadPoolIssuer.issue(request);
  }
}
