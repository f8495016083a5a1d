/**
 * A small TTL cache of promises, for lookups against an API (pods, Configurations, token
 * reviews): concurrent gets of a key share one load, a failed load is forgotten at once, the
 * time to live starts when the load succeeds, and the cache is bounded.
 *
 * @module
 */

interface CacheEntry<V> {
  /** Clock reading after which the entry is stale; Infinity while loading. */
  expires: number;
  value: Promise<V>;
  /** The loaded value, once loaded. */
  loaded?: { value: V };
}

/**
 * A small TTL cache of promises: concurrent gets of a key share one load; a failed load is
 * forgotten at once; the time to live starts when the load succeeds.
 */
export class PromiseCache<V> {
  readonly #entries = new Map<string, CacheEntry<V>>();
  readonly #ttl: (value: V) => number;
  readonly #maxEntries: number;
  readonly #now: () => number;

  /**
   * `ttl` gives a loaded value's time to live in ms (0 or less: not kept); at most
   * `maxEntries` are kept; `now` is a monotonic clock in ms (tests move it).
   */
  constructor(
    ttl: (value: V) => number,
    maxEntries: number,
    now: () => number = () => performance.now(),
  ) {
    this.#ttl = ttl;
    this.#maxEntries = maxEntries;
    this.#now = now;
  }

  /** The cached value of `key`, or the one `load` gives (shared by concurrent callers). */
  get(key: string, load: () => Promise<V>): Promise<V> {
    const now = this.#now();
    const found = this.#entries.get(key);
    if (found && found.expires > now) return found.value;
    if (found) this.#entries.delete(key);
    const entry: CacheEntry<V> = { expires: Infinity, value: load() };
    this.#entries.set(key, entry);
    entry.value.then(
      (value) => {
        entry.loaded = { value };
        if (this.#entries.get(key) !== entry) return;
        const ttl = this.#ttl(value);
        if (ttl > 0) entry.expires = this.#now() + ttl;
        else this.#entries.delete(key);
      },
      () => {
        if (this.#entries.get(key) === entry) this.#entries.delete(key);
      },
    );
    this.#bound(now);
    return entry.value;
  }

  /** Forgets `key` if it still holds `stale` (not if it was reloaded meanwhile). */
  invalidate(key: string, stale: V): void {
    const entry = this.#entries.get(key);
    if (entry?.loaded && entry.loaded.value === stale) this.#entries.delete(key);
  }

  /** Forgets everything. */
  clear(): void {
    this.#entries.clear();
  }

  /** How many entries are held (loading ones included). */
  get size(): number {
    return this.#entries.size;
  }

  /** Drops stale entries, then the oldest, when the cache grows past its bound. */
  #bound(now: number): void {
    if (this.#entries.size <= this.#maxEntries) return;
    for (const [key, entry] of this.#entries) {
      if (entry.expires <= now) this.#entries.delete(key);
    }
    for (const key of this.#entries.keys()) {
      if (this.#entries.size <= this.#maxEntries) break;
      this.#entries.delete(key);
    }
  }
}
