/**
 * Entry point of a serving thread (serving-thread.ts), bundled on its own
 * (dist/sentry-serving.cjs, and a SEA asset of the single binary) so that the thread loads
 * only TLS, HTTP/2 and gRPC framing code.
 *
 * @module
 */
import { runServingThread } from "./serving-thread.ts";

runServingThread();
