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
      bucket.tokens = this.#tokensAt(bucket, nowMs);
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

  /** The tokens `bucket` holds at `nowMs`: refilled since its last use, at most a minute's worth. */
  #tokensAt(bucket: Bucket, nowMs: number): number {
    const refill = Math.max(0, ((nowMs - bucket.updatedMs) * this.perMinute) / 60_000);
    return Math.min(this.perMinute, bucket.tokens + refill);
  }

  #evict(nowMs: number): void {
    // A bucket that has refilled to full is the same as no bucket: drop those first.
    for (const [identity, bucket] of this.#buckets) {
      if (this.#tokensAt(bucket, nowMs) >= this.perMinute) this.#buckets.delete(identity);
    }
    // Still full: drop the least recently created.
    for (const identity of this.#buckets.keys()) {
      if (this.#buckets.size < this.maxIdentities) break;
      this.#buckets.delete(identity);
    }
  }
}
