/**
 * The signing worker: the part of a SignCertificate call that needs no network — decode and
 * verify the CSR, build and sign the workload certificate — run on a worker thread so that
 * several requests are signed at once on several cores while the event loop keeps serving
 * gRPC. The pool (signing-pool.ts) sends it the issuer of each bundle generation once, then
 * requests; it answers each request with the certificate chain or a typed error.
 *
 * The message handling is a plain class ({@link SigningWorkerState}) so that it can be tested
 * without threads; {@link runSigningWorker} connects it to the worker's parent port, and
 * signing-worker-main.ts is the worker's entry point.
 *
 * @module
 */
import type { KeyObject } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { CsrError, decodeCsr } from "../x509/csr.ts";
import { SigningKey } from "../x509/keys.ts";
import {
  issuedChain,
  issueWorkloadCertificate,
  type SigningBundle,
  SigningError,
} from "../ca/signer.ts";
import { SpiffeId } from "../ca/spiffe.ts";

/** The signing half of one trust bundle, as it crosses to a worker. */
export interface BundleMessage {
  kind: "bundle";
  generation: number;
  /** The issuer's private key (KeyObjects can be posted to other threads). */
  issuerKey: KeyObject;
  issuerSubject: Uint8Array;
  issuerKeyId: Uint8Array;
  issuerChainPem: string;
  issuerNotBeforeMs: number;
  issuerNotAfterMs: number;
}

/** The message that hands `bundle`'s issuer to a worker as `generation`. */
export function bundleMessage(bundle: SigningBundle, generation: number): BundleMessage {
  return {
    kind: "bundle",
    generation,
    issuerKey: bundle.issuer.key.privateKey,
    // Copies: a view would carry its whole underlying buffer to the other thread.
    issuerSubject: new Uint8Array(bundle.issuer.subject),
    issuerKeyId: new Uint8Array(bundle.issuer.keyId),
    issuerChainPem: bundle.issuerChainPem,
    issuerNotBeforeMs: bundle.issuerNotBefore.getTime(),
    issuerNotAfterMs: bundle.issuerNotAfter.getTime(),
  };
}

/** One certificate to issue. */
export interface SignMessage {
  kind: "sign";
  seq: number;
  generation: number;
  /** PEM CSR bytes as received. */
  csr: Uint8Array;
  /** The validated SPIFFE ID. */
  id: string;
  ttlMs: number;
  skewMs: number;
  nowMs: number;
  /** DNS SANs besides the SPIFFE ID (Dapr's control-plane services). */
  dnsNames: string[];
}

/** What the pool sends a worker. */
export type ToWorker = BundleMessage | SignMessage;

/** Why a request failed in the worker: a bad CSR, an issuer that cannot sign, or a bug. */
export type SigningFailureKind = "csr" | "signing" | "internal";

/** A worker's answer to one {@link SignMessage}. */
export type FromWorker =
  | { seq: number; chain: Uint8Array; notAfterMs: number }
  | { seq: number; failure: SigningFailureKind; message: string };

/** How many bundle generations a worker keeps (in-flight requests may name an older one). */
const KEPT_GENERATIONS = 3;

/** A worker's bundles and its answer to each message. */
export class SigningWorkerState {
  readonly #bundles = new Map<number, SigningBundle>();

  /** Handles one message; returns the reply to post, if any. */
  handle(message: ToWorker): FromWorker | undefined {
    if (message.kind === "bundle") {
      this.#bundles.set(message.generation, {
        issuer: {
          key: new SigningKey(message.issuerKey),
          subject: message.issuerSubject,
          keyId: message.issuerKeyId,
        },
        issuerChainPem: message.issuerChainPem,
        issuerNotBefore: new Date(message.issuerNotBeforeMs),
        issuerNotAfter: new Date(message.issuerNotAfterMs),
      });
      for (const generation of this.#bundles.keys()) {
        if (generation <= message.generation - KEPT_GENERATIONS) this.#bundles.delete(generation);
      }
      return undefined;
    }
    return this.#sign(message);
  }

  #sign(message: SignMessage): FromWorker {
    const { seq } = message;
    const bundle = this.#bundles.get(message.generation);
    if (!bundle) {
      return { seq, failure: "internal", message: `bundle ${message.generation} is unknown` };
    }
    try {
      const spki = decodeCsr(message.csr).subjectPublicKeyInfo;
      const issued = issueWorkloadCertificate(
        bundle,
        SpiffeId.parse(message.id),
        spki,
        { ttlMs: message.ttlMs, skewMs: message.skewMs },
        new Date(message.nowMs),
        message.dnsNames,
      );
      const { chain, notAfter } = issuedChain(issued);
      return { seq, chain, notAfterMs: notAfter.getTime() };
    } catch (error) {
      const failure: SigningFailureKind = error instanceof CsrError
        ? "csr"
        : error instanceof SigningError
        ? "signing"
        : "internal";
      return { seq, failure, message: (error as Error).message };
    }
  }
}

/** The worker thread's main loop: answers the pool until the thread is terminated. */
export function runSigningWorker(): void {
  const port = parentPort;
  if (!port) throw new Error("runSigningWorker must run on a worker thread");
  const state = new SigningWorkerState();
  port.on("message", (message: ToWorker) => {
    const reply = state.handle(message);
    if (!reply) return;
    // The chain's bytes are moved, not copied, when they fill their buffer (they do).
    const chain = "chain" in reply ? reply.chain : undefined;
    const movable = chain && chain.byteOffset === 0 &&
      chain.byteLength === chain.buffer.byteLength && chain.buffer instanceof ArrayBuffer;
    port.postMessage(reply, movable ? [chain.buffer as ArrayBuffer] : []);
  });
}
