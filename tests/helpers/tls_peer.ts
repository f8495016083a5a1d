/**
 * What a TLS server presents to a new connection: the serial of its certificate, read with
 * Node's TLS client (ALPN h2, the given anchors; the name is not checked, the chain is).
 */
import { connect } from "node:tls";

/** The serial (hex) of the certificate a new TLS connection to 127.0.0.1:`port` is shown. */
export function presentedSerial(port: number, anchorsPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      ca: anchorsPem,
      servername: "localhost",
      ALPNProtocols: ["h2"],
      checkServerIdentity: () => undefined,
    }, () => {
      resolve(socket.getPeerX509Certificate()!.serialNumber);
      socket.end();
    });
    socket.once("error", reject);
  });
}
