/**
 * Assertions shared by the credential-store unit tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { BundlePem } from "../../src/ca/bundle.ts";
import { type CredentialStore, StoreError, StoreUnavailableError } from "../../src/stores/store.ts";

/**
 * `store.load()` gives `want` (a bundle or null), or, for a pattern, is refused with a
 * StoreError (not "unavailable") whose message matches it.
 */
export async function assertLoads(
  store: CredentialStore,
  want: BundlePem | null | RegExp,
): Promise<void> {
  if (want instanceof RegExp) {
    await assert.rejects(store.load(), (error: Error) => {
      assert.ok(error instanceof StoreError);
      assert.ok(!(error instanceof StoreUnavailableError));
      assert.match(error.message, want);
      return true;
    });
  } else {
    assert.deepEqual(await store.load(), want);
  }
}
