/**
 * TLS server credentials for grpc-js whose key and certificate chain can be replaced while
 * the port stays open: new handshakes use the new pair, established connections keep theirs.
 * grpc-js does this for its own certificate providers through a method that is protected in
 * its type declarations (`ServerCredentials.updateSecureContextOptions`); this module is the
 * one place that reaches it, and checks at creation that it is there, so that a grpc-js
 * upgrade that removes it fails at start-up instead of at the first rotation.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";

/** What the server presents: its key, its chain (leaf first), and the anchors it trusts. */
export interface ServingTls {
  keyPem: string;
  chainPem: string;
  anchorsPem: string;
}

interface Updatable {
  updateSecureContextOptions(options: { ca: Buffer; cert: Buffer[]; key: Buffer[] }): void;
}

/** grpc-js server credentials plus {@link rotate}. */
export class RotatingServerCredentials {
  /** Pass these to `grpc.Server.bindAsync`. */
  readonly credentials: grpc.ServerCredentials;

  /**
   * Creates credentials presenting `tls`. The anchors are always passed (never null: grpc-js
   * would then load Node's default roots, which breaks handshakes on Deno); no client
   * certificate is requested (sentry authenticates each request by its token).
   */
  constructor(tls: ServingTls) {
    this.credentials = grpc.ServerCredentials.createSsl(
      Buffer.from(tls.anchorsPem),
      [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.chainPem) }],
      false,
    );
    if (
      typeof (this.credentials as unknown as Partial<Updatable>).updateSecureContextOptions !==
        "function"
    ) {
      throw new Error(
        "this version of @grpc/grpc-js cannot replace a server's certificate in place " +
          "(ServerCredentials.updateSecureContextOptions is missing)",
      );
    }
  }

  /** Presents `tls` from the next handshake on. */
  rotate(tls: ServingTls): void {
    (this.credentials as unknown as Updatable).updateSecureContextOptions({
      ca: Buffer.from(tls.anchorsPem),
      cert: [Buffer.from(tls.chainPem)],
      key: [Buffer.from(tls.keyPem)],
    });
  }
}
