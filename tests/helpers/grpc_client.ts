/**
 * A grpc-js client for SignCertificate over TLS that trusts only the given anchors and
 * checks the server's hostname (`localhost`), built from the .proto file on disk.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { fileURLToPath as fromFileUrl } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { generateKey, makeCsr } from "./openssl.ts";

const PROTO = fromFileUrl(
  new URL("../../proto/dapr/proto/sentry/v1/sentry.proto", import.meta.url),
);

/** Request fields (camelCase, as proto-loader maps them). */
export interface SignCertificateRequest {
  id?: string;
  token?: string;
  trustDomain?: string;
  namespace?: string;
  certificateSigningRequest?: string | Uint8Array;
  tokenValidator?: number;
  jwtAudiences?: string[];
}

/** Response fields. */
export interface SignCertificateResponse {
  workloadCertificate: Buffer;
  trustChainCertificates: Buffer[];
  validUntil: { seconds: string; nanos: number };
  /** Set when sentry issues JWT-SVIDs (`--jwt-enabled`). */
  jwt?: { value: string } | null;
  perAudienceJwts?: Record<string, { value: string }>;
}

/** A gRPC error as the client sees it. */
export interface GrpcError extends Error {
  code: grpc.status;
  details: string;
}

type CaClient = grpc.Client & {
  SignCertificate(
    request: unknown,
    callback: (error: grpc.ServiceError | null, response: SignCertificateResponse) => void,
  ): void;
};

/** A connected client; `close()` when done. */
export class SentryClient {
  readonly #client: CaClient;

  /** Connects to `localhost:port`, trusting only `anchorsPem`. */
  constructor(port: number, anchorsPem: string, host = "localhost") {
    const definition = loadSync(PROTO, { longs: String, enums: Number, defaults: true });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      dapr: { proto: { sentry: { v1: { CA: grpc.ServiceClientConstructor } } } };
    };
    const credentials = grpc.credentials.createSsl(Buffer.from(anchorsPem));
    this.#client = new pkg.dapr.proto.sentry.v1.CA(
      `${host}:${port}`,
      credentials,
    ) as unknown as CaClient;
  }

  /** Calls SignCertificate; rejects with a {@link GrpcError}. */
  sign(request: SignCertificateRequest): Promise<SignCertificateResponse> {
    const wire = {
      ...request,
      certificateSigningRequest: typeof request.certificateSigningRequest === "string"
        ? Buffer.from(request.certificateSigningRequest)
        : Buffer.from(request.certificateSigningRequest ?? new Uint8Array()),
    };
    return new Promise((resolve, reject) => {
      this.#client.SignCertificate(wire, (error, response) => {
        if (error) reject(error as GrpcError);
        else resolve(response);
      });
    });
  }

  /** Closes the channel. */
  close(): void {
    this.#client.close();
  }
}

/**
 * Connects to sentry on `port`, sends one request with a fresh ECDSA P-256 CSR (made with the
 * openssl CLI in `work`) for app `app` in namespace `default` unless `request` says otherwise,
 * and closes the channel.
 */
export async function signOnce(
  port: number,
  anchorsPem: string,
  work: string,
  request: SignCertificateRequest = {},
): Promise<SignCertificateResponse> {
  const client = new SentryClient(port, anchorsPem);
  try {
    return await client.sign({
      id: "app",
      namespace: "default",
      certificateSigningRequest: await makeCsr(work, await generateKey("ec-p256")),
      ...request,
    });
  } finally {
    client.close();
  }
}
