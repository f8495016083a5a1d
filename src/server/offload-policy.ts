/**
 * Decides, request by request, where a SignCertificate call does its OpenSSL work (CSR
 * verification and signing): inline on the event loop, or on node:crypto's thread pool.
 *
 * Inline is fastest for a lone caller (no hand-over between threads). When requests come in
 * batches — several arrive in the same turn of the event loop, or others are still in
 * progress — the thread pool lets the event loop go on reading, parsing and answering the
 * rest while OpenSSL works on the other core.
 *
 * @module
 */
import { setImmediate } from "node:timers";

/** Tracks arrivals per event-loop turn. */
export class OffloadPolicy {
  #arrivalsThisTurn = 0;

  /**
   * Records a request that starts now, with `inFlight` requests (itself included) in
   * progress, and returns true when its crypto should run on the thread pool.
   */
  onArrival(inFlight: number): boolean {
    if (this.#arrivalsThisTurn === 0) {
      // Runs after this turn's I/O callbacks: every request read in the same batch counts.
      setImmediate(() => (this.#arrivalsThisTurn = 0));
    }
    this.#arrivalsThisTurn++;
    return inFlight > 1 || this.#arrivalsThisTurn > 1;
  }
}
