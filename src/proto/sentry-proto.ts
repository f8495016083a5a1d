/**
 * The `dapr.proto.sentry.v1` service definition, embedded so that the single binary reads no
 * `.proto` file at run time. It is the protobufjs JSON form of proto/dapr/proto/sentry/v1/
 * sentry.proto (plus the two google.protobuf types it uses); tests/unit/proto_test.ts checks
 * that the two stay identical.
 *
 * @module
 */
import { fromJSON, type PackageDefinition } from "@grpc/proto-loader";

/** protobufjs JSON descriptor of sentry.proto and the well-known types it imports. */
export const SENTRY_PROTO_JSON = {
  nested: {
    dapr: {
      nested: {
        proto: {
          nested: {
            sentry: {
              nested: {
                v1: {
                  options: { go_package: "github.com/dapr/dapr/pkg/proto/sentry/v1;sentry" },
                  nested: {
                    CA: {
                      methods: {
                        SignCertificate: {
                          requestType: "SignCertificateRequest",
                          responseType: "SignCertificateResponse",
                        },
                      },
                    },
                    SignCertificateRequest: {
                      fields: {
                        id: { type: "string", id: 1 },
                        token: { type: "string", id: 2 },
                        trustDomain: { type: "string", id: 3 },
                        namespace: { type: "string", id: 4 },
                        certificateSigningRequest: { type: "bytes", id: 5 },
                        tokenValidator: { type: "TokenValidator", id: 6 },
                        jwtAudiences: { rule: "repeated", type: "string", id: 7 },
                      },
                      nested: {
                        TokenValidator: {
                          values: { UNKNOWN: 0, INSECURE: 1, KUBERNETES: 2, JWKS: 3 },
                        },
                      },
                    },
                    SignCertificateResponse: {
                      oneofs: { _jwt: { oneof: ["jwt"] } },
                      fields: {
                        workloadCertificate: { type: "bytes", id: 1 },
                        trustChainCertificates: { rule: "repeated", type: "bytes", id: 2 },
                        validUntil: { type: "google.protobuf.Timestamp", id: 3 },
                        jwt: {
                          type: "google.protobuf.StringValue",
                          id: 4,
                          options: { proto3_optional: true },
                        },
                        perAudienceJwts: {
                          keyType: "string",
                          type: "google.protobuf.StringValue",
                          id: 5,
                        },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
    google: {
      nested: {
        protobuf: {
          nested: {
            Timestamp: {
              fields: { seconds: { type: "int64", id: 1 }, nanos: { type: "int32", id: 2 } },
            },
            StringValue: { fields: { value: { type: "string", id: 1 } } },
          },
        },
      },
    },
  },
};

/** Fully-qualified name of the CA service. */
export const CA_SERVICE = "dapr.proto.sentry.v1.CA";

/** The package definition for grpc-js (enums as numbers, 64-bit integers as strings). */
export function sentryPackageDefinition(): PackageDefinition {
  return fromJSON(SENTRY_PROTO_JSON as Parameters<typeof fromJSON>[0], {
    longs: String,
    enums: Number,
    defaults: true,
    oneofs: true,
  });
}
