/**
 * src/server/rotating-credentials.ts on a real grpc-js server: a TLS client sees the first
 * certificate, and after `rotate` a new handshake sees the second one while the port stays
 * bound.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { issueServingIdentity } from "../../src/server/serving-identity.ts";
import { RotatingServerCredentials } from "../../src/server/rotating-credentials.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date();
const BUNDLE = testTrustBundle({ now: new Date(NOW.getTime() - 60_000) });

function servingTls() {
  const identity = issueServingIdentity(BUNDLE, "cluster.local", "default", 3_600_000, 0, NOW);
  return { ...identity, anchorsPem: BUNDLE.anchorsPem };
}

/** The serial of the certificate the server presents in a new handshake. */
function presentedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      ca: BUNDLE.anchorsPem,
      servername: "localhost",
      ALPNProtocols: ["h2"],
    }, () => {
      resolve(socket.getPeerX509Certificate()!.serialNumber);
      socket.end();
    });
    socket.once("error", reject);
  });
}

Deno.test("rotate: new handshakes get the new certificate on the same port", async () => {
  const first = servingTls();
  const credentials = new RotatingServerCredentials(first);
  const server = new grpc.Server();
  try {
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        "127.0.0.1:0",
        credentials.credentials,
        (error, bound) => error ? reject(error) : resolve(bound),
      )
    );
    const firstSerial = new X509Certificate(first.chainPem).serialNumber;
    assert.equal(await presentedSerial(port), firstSerial);

    const second = servingTls();
    credentials.rotate(second);
    const secondSerial = new X509Certificate(second.chainPem).serialNumber;
    assert.notEqual(secondSerial, firstSerial);
    assert.equal(await presentedSerial(port), secondSerial);
  } finally {
    server.forceShutdown();
  }
});
