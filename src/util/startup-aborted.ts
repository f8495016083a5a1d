/**
 * The error a start-up wait throws when a stop signal ends it (waiting for the Kubernetes API
 * or for the credential store), so that the caller can stop quietly instead of reporting a
 * failure.
 *
 * @module
 */

/** A start-up wait was ended by a stop signal. */
export class StartupAbortedError extends Error {
  override name = "StartupAbortedError";
}
