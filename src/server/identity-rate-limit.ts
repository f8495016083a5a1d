/**
 * An optional limit on signing requests per workload identity (`--identity-rate-limit`): a
 * token bucket per SPIFFE ID that holds a minute's worth of requests and refills at the
 * configured rate. It protects the CA (and the token validators' backends) from one crash-
 * looping or misbehaving workload without slowing anyone else; a caller over its limit gets
 * RESOURCE_EXHAUSTED and retries with backoff. The number of buckets is bounded: idle ones
 * (refilled to full) are dropped first, then the oldest.
 *
 * @module
 */

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** Token buckets keyed by identity. */
export class IdentityRateLimiter {
  readonly #buckets = new Map<string, Bucket>();

  /**
   * `perMinute` requests a minute for each identity, with bursts of up to `perMinute`;
   * at most `maxIdentities` buckets are kept.
   */
  constructor(readonly perMinute: number, readonly maxIdentities = 100_000) {
    if (!(perMinute > 0)) throw new Error("the rate limit must be positive");
  }

  /** Takes one request's token for `identity` at `nowMs`; false when it is over its limit. */
  tryTake(identity: string, nowMs: number): boolean {
    let bucket = this.#buckets.get(identity);
    if (bucket) {
      const refill = ((nowMs - bucket.updatedMs) * this.perMinute) / 60_000;
      bucket.tokens = Math.min(this.perMinute, bucket.tokens + Math.max(0, refill));
      bucket.updatedMs = nowMs;
    } else {
      if (this.#buckets.size >= this.maxIdentities) this.#evict(nowMs);
      bucket = { tokens: this.perMinute, updatedMs: nowMs };
      this.#buckets.set(identity, bucket);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Number of identities tracked. */
  get size(): number {
    return this.#buckets.size;
  }

  #evict(nowMs: number): void {
    // A bucket that has refilled to full is the same as no bucket: drop those first.
    for (const [identity, bucket] of this.#buckets) {
      const refill = ((nowMs - bucket.updatedMs) * this.perMinute) / 60_000;
      if (bucket.tokens + refill >= this.perMinute) this.#buckets.delete(identity);
    }
    // Still full: drop the least recently created.
    for (const identity of this.#buckets.keys()) {
      if (this.#buckets.size < this.maxIdentities) break;
      this.#buckets.delete(identity);
    }
  }
}
