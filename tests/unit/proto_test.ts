/**
 * The embedded protobufjs JSON (src/proto/sentry-proto.ts) must stay identical to
 * proto/dapr/proto/sentry/v1/sentry.proto, as protobufjs itself reads the .proto file.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
// protobufjs is not in deno.json's import map (it only comes in through @grpc/proto-loader).
import protobuf from "protobufjs";
import { CA_SERVICE, SENTRY_PROTO_JSON } from "../../src/proto/sentry-proto.ts";

const PROTO_PATH = fileURLToPath(
  new URL("../../proto/dapr/proto/sentry/v1/sentry.proto", import.meta.url),
);

// deno-lint-ignore no-explicit-any
type Json = any;

function loadProtoJson(): Json {
  const root = new protobuf.Root();
  root.loadSync(PROTO_PATH);
  root.resolveAll();
  // JSON round trip: plain objects, no undefined members.
  return JSON.parse(JSON.stringify(root.toJSON()));
}

/** A protobufjs Root built from the embedded JSON alone. */
function embeddedRoot(): protobuf.Root {
  return protobuf.Root.fromJSON(SENTRY_PROTO_JSON as protobuf.INamespace);
}

const fromProto = loadProtoJson();
const embedded: Json = JSON.parse(JSON.stringify(SENTRY_PROTO_JSON));

Deno.test("the dapr namespace of the embedded JSON equals the .proto file", () => {
  assert.deepEqual(embedded.nested.dapr, fromProto.nested.dapr);
});

Deno.test("google.protobuf Timestamp and StringValue match protobufjs's definitions", () => {
  const embeddedTypes = embedded.nested.google.nested.protobuf.nested;
  const protoTypes = fromProto.nested.google.nested.protobuf.nested;
  assert.deepEqual(Object.keys(embeddedTypes).sort(), ["StringValue", "Timestamp"]);
  assert.deepEqual(embeddedTypes.Timestamp, protoTypes.Timestamp);
  assert.deepEqual(embeddedTypes.StringValue, protoTypes.StringValue);
});

Deno.test("the embedded JSON holds nothing but the dapr and google namespaces", () => {
  assert.deepEqual(Object.keys(embedded.nested).sort(), ["dapr", "google"]);
  assert.deepEqual(Object.keys(embedded.nested.google.nested), ["protobuf"]);
});

Deno.test("the embedded JSON resolves on its own and describes Dapr's wire contract", () => {
  const root = embeddedRoot();
  root.resolveAll();
  const service = root.lookupService(CA_SERVICE);
  assert.equal(CA_SERVICE, "dapr.proto.sentry.v1.CA");
  assert.deepEqual(Object.keys(service.methods), ["SignCertificate"]);
  const method = service.methods.SignCertificate;
  assert.equal(
    method.resolvedRequestType?.fullName,
    ".dapr.proto.sentry.v1.SignCertificateRequest",
  );
  assert.equal(
    method.resolvedResponseType?.fullName,
    ".dapr.proto.sentry.v1.SignCertificateResponse",
  );
  assert.equal(method.requestStream, undefined);
  assert.equal(method.responseStream, undefined);

  const request = root.lookupType("dapr.proto.sentry.v1.SignCertificateRequest");
  assert.deepEqual(
    request.fieldsArray.map((field) => [field.id, field.name, field.type, field.repeated]),
    [
      [1, "id", "string", false],
      [2, "token", "string", false],
      [3, "trustDomain", "string", false],
      [4, "namespace", "string", false],
      [5, "certificateSigningRequest", "bytes", false],
      [6, "tokenValidator", "TokenValidator", false],
      [7, "jwtAudiences", "string", true],
    ],
  );
  const validator = root.lookupEnum("dapr.proto.sentry.v1.SignCertificateRequest.TokenValidator");
  assert.deepEqual(validator.values, { UNKNOWN: 0, INSECURE: 1, KUBERNETES: 2, JWKS: 3 });

  const response = root.lookupType("dapr.proto.sentry.v1.SignCertificateResponse");
  assert.deepEqual(
    response.fieldsArray.map((field) => [field.id, field.name, field.type, field.repeated]),
    [
      [1, "workloadCertificate", "bytes", false],
      [2, "trustChainCertificates", "bytes", true],
      [3, "validUntil", "google.protobuf.Timestamp", false],
      [4, "jwt", "google.protobuf.StringValue", false],
      [5, "perAudienceJwts", "google.protobuf.StringValue", false],
    ],
  );
  assert.equal(response.fields.perAudienceJwts.map, true);
  assert.equal(response.fields.jwt.options?.proto3_optional, true);
});

Deno.test("a response encodes the same bytes with the embedded JSON and with the .proto", () => {
  const fromFile = new protobuf.Root();
  fromFile.loadSync(PROTO_PATH);
  const typeA = fromFile.lookupType("dapr.proto.sentry.v1.SignCertificateResponse");
  const typeB = embeddedRoot().lookupType(
    "dapr.proto.sentry.v1.SignCertificateResponse",
  );
  const message = {
    workloadCertificate: new TextEncoder().encode("leaf"),
    trustChainCertificates: [new TextEncoder().encode("anchors")],
    validUntil: { seconds: 1_900_000_000, nanos: 0 },
    jwt: { value: "a.b.c" },
    perAudienceJwts: { aud: { value: "x.y.z" } },
  };
  const a = typeA.encode(typeA.fromObject(message)).finish();
  const b = typeB.encode(typeB.fromObject(message)).finish();
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.ok(a.length > 20);
});
