/**
 * Entry point of a signing worker thread, bundled on its own (dist/sentry-signer.cjs, and a
 * SEA asset of the single binary) so that a worker loads only the CA code it needs — not the
 * gRPC, Kubernetes, Vault and CLI code of the main program — and stays small in memory.
 *
 * @module
 */
import { runSigningWorker } from "./signing-worker.ts";

runSigningWorker();
