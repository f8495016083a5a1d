#!/usr/bin/python3
"""An independent SignCertificate client for sentry's interoperability test.

This script shares no code with sentry (or with its TypeScript test helpers): it talks to
`dapr.proto.sentry.v1.CA/SignCertificate` with Python's grpcio over TLS, encodes the request
and decodes the response by hand from the proto3 wire format (no generated protobuf code),
and makes keys and CSRs with the `cryptography` package. What it observes is printed as one
JSON line on stdout; tests/e2e/python_interop_test.ts asserts on it.

Run it with Debian's interpreter, which has the modules from apt:

    apt-get install python3-grpcio python3-cryptography
    /usr/bin/python3 sentry_client.py sign --port N --anchors ca.crt --out-dir DIR \
        --key-type ec-p256 [--id myapp --namespace default --trust-domain cluster.local]
    /usr/bin/python3 sentry_client.py error-cases --port N --anchors ca.crt --out-dir DIR

Modes:
  sign         generate a key of --key-type, send its CSR, write the returned chain and
               trust anchors to --out-dir, and report the status, the certificate facts
               (SAN, key usages, validity, public key match) and valid_until.
  error-cases  send a fixed list of requests (mostly bad ones) and report, for each case
               name, the gRPC status code name and details.
  burst        on one warm connection, start --count calls at once; print the line
               "first-done" as soon as one finishes (the test stops sentry then), and at the
               end one JSON line with every call's status code name.
"""

import argparse
import base64
import calendar
import json
import os
import sys

try:
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError as error:  # pragma: no cover - reported to the test as a clear failure
    sys.stderr.write(
        f"missing Python module ({error}); install them with: "
        "apt-get install python3-grpcio python3-cryptography\n"
    )
    sys.exit(3)

METHOD = "/dapr.proto.sentry.v1.CA/SignCertificate"
TIMEOUT_SECONDS = 20

# SignCertificateRequest.TokenValidator
UNKNOWN, INSECURE, KUBERNETES, JWKS = 0, 1, 2, 3

# proto3 wire types
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


# --------------------------------------------------------------------------------------------
# Hand-written proto3 wire format
# --------------------------------------------------------------------------------------------


def encode_varint(value):
    """Base-128 varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_key(field, wire_type):
    return encode_varint((field << 3) | wire_type)


def encode_bytes_field(field, data):
    return encode_key(field, LENGTH_DELIMITED) + encode_varint(len(data)) + data


def encode_sign_request(
    id="",
    token="",
    trust_domain="",
    namespace="",
    csr=b"",
    token_validator=0,
    jwt_audiences=(),
):
    """SignCertificateRequest. proto3 omits fields holding their default (empty/zero) value."""
    out = bytearray()
    for field, text in ((1, id), (2, token), (3, trust_domain), (4, namespace)):
        if text:
            out += encode_bytes_field(field, text.encode("utf-8"))
    if csr:
        out += encode_bytes_field(5, csr)
    if token_validator:
        out += encode_key(6, VARINT) + encode_varint(token_validator)
    for audience in jwt_audiences:  # repeated: every element is written, even an empty one
        out += encode_bytes_field(7, audience.encode("utf-8"))
    return bytes(out)


def decode_varint(data, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def to_signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(data):
    """Yields (field number, wire type, value): an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == FIXED64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire_type == FIXED32:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = decode_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported wire type {wire_type} for field {field}")
        if pos > len(data):
            raise ValueError(f"field {field} runs past the end of the message")
        yield field, wire_type, value


def decode_timestamp(data):
    """google.protobuf.Timestamp {1: int64 seconds, 2: int32 nanos}."""
    seconds, nanos = 0, 0
    for field, wire_type, value in iter_fields(data):
        if field == 1 and wire_type == VARINT:
            seconds = to_signed64(value)
        elif field == 2 and wire_type == VARINT:
            nanos = to_signed64(value)
    return {"seconds": seconds, "nanos": nanos}


def decode_sign_response(data):
    """SignCertificateResponse; fields other than 1-3 are only noted by number."""
    response = {
        "workload_certificate": b"",
        "trust_chain_certificates": [],
        "valid_until": None,
        "other_fields": [],
    }
    for field, wire_type, value in iter_fields(data):
        if field == 1 and wire_type == LENGTH_DELIMITED:
            response["workload_certificate"] = bytes(value)
        elif field == 2 and wire_type == LENGTH_DELIMITED:
            response["trust_chain_certificates"].append(bytes(value))
        elif field == 3 and wire_type == LENGTH_DELIMITED:
            response["valid_until"] = decode_timestamp(value)
        else:
            response["other_fields"].append(field)
    return response


# --------------------------------------------------------------------------------------------
# Keys and CSRs
# --------------------------------------------------------------------------------------------


def generate_key(key_type):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type}")


def make_csr_der(key):
    """A CSR with an empty subject, as daprd sends; Ed25519 signs without a separate hash."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def pem_block(label, der):
    body = base64.b64encode(der).decode("ascii")
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode("ascii")


def spki_der(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------


def open_channel(port, anchors_path):
    """TLS to localhost:PORT trusting only the anchors; grpcio checks the name `localhost`."""
    with open(anchors_path, "rb") as file:
        roots = file.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(f"localhost:{port}", credentials)


def call_sign(channel, request_bytes):
    """Returns (code name, details, decoded response or None)."""
    stub = channel.unary_unary(
        METHOD,
        request_serializer=lambda raw: raw,  # the request is already encoded by hand
        response_deserializer=decode_sign_response,
    )
    try:
        return "OK", "", stub(request_bytes, timeout=TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        return error.code().name, error.details() or "", None


# --------------------------------------------------------------------------------------------
# Certificate inspection
# --------------------------------------------------------------------------------------------


def unix_seconds(when):
    return calendar.timegm(when.utctimetuple())


def not_after(cert):
    return getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after


def not_before(cert):
    return getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before


def general_name(name):
    kinds = {
        x509.UniformResourceIdentifier: "uri",
        x509.DNSName: "dns",
        x509.IPAddress: "ip",
        x509.RFC822Name: "email",
    }
    for cls, kind in kinds.items():
        if isinstance(name, cls):
            return [kind, str(name.value)]
    return [type(name).__name__, repr(name)]


def describe_leaf(leaf, csr_public_key):
    """The facts the TypeScript test asserts, checked here with `cryptography`."""
    extensions = leaf.extensions
    facts = {
        "leaf_subject": leaf.subject.rfc4514_string(),
        "leaf_not_before": unix_seconds(not_before(leaf)),
        "leaf_not_after": unix_seconds(not_after(leaf)),
        "public_key_matches_csr": spki_der(leaf.public_key()) == spki_der(csr_public_key),
    }

    san = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = [general_name(name) for name in san.value]
    facts["san_names"] = names
    facts["san_uris"] = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    facts["san_critical"] = san.critical
    facts["san_exactly_one_uri"] = len(names) == 1 and names[0][0] == "uri"

    key_usage = extensions.get_extension_for_class(x509.KeyUsage)
    usage = key_usage.value
    facts["key_usage_critical"] = key_usage.critical
    facts["key_usage"] = sorted(
        flag
        for flag in (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        )
        if getattr(usage, flag)
    )
    facts["key_usage_digital_signature_only"] = facts["key_usage"] == ["digital_signature"]

    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names_by_oid = {
        ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
        ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    }
    facts["extended_key_usage"] = sorted(names_by_oid.get(oid, oid.dotted_string) for oid in eku)

    try:
        facts["is_ca"] = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        facts["is_ca"] = False
    return facts


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


def run_sign(args):
    key = generate_key(args.key_type)
    csr_der = make_csr_der(key)
    csr_pem = pem_block("CERTIFICATE REQUEST", csr_der)
    request = encode_sign_request(
        id=args.id,
        trust_domain=args.trust_domain,
        namespace=args.namespace,
        csr=csr_pem,
        token_validator=args.token_validator,
    )
    with open_channel(args.port, args.anchors) as channel:
        code, details, response = call_sign(channel, request)
    result = {"key_type": args.key_type, "code": code, "details": details}
    if response is None:
        return result

    prefix = os.path.join(args.out_dir, f"{args.key_type}-{args.label}")
    paths = {
        "key_file": prefix + "-key.pem",
        "csr_file": prefix + "-csr.pem",
        "chain_file": prefix + "-chain.pem",
        "anchors_file": prefix + "-anchors.pem",
    }
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    contents = {
        "key_file": key_pem,
        "csr_file": csr_pem,
        "chain_file": response["workload_certificate"],
        "anchors_file": b"".join(response["trust_chain_certificates"]),
    }
    for name, path in paths.items():
        with open(path, "wb") as file:
            file.write(contents[name])

    chain = load_pem_chain(response["workload_certificate"])
    valid_until = response["valid_until"] or {"seconds": None, "nanos": None}
    result.update(paths)
    result["cert_count"] = len(chain)
    result["trust_chain_elements"] = len(response["trust_chain_certificates"])
    result["valid_until_seconds"] = valid_until["seconds"]
    result["valid_until_nanos"] = valid_until["nanos"]
    result["other_response_fields"] = response["other_fields"]
    if chain:
        result.update(describe_leaf(chain[0], key.public_key()))
    return result


def load_pem_chain(data):
    """Every CERTIFICATE block in `data`, in order (cryptography 38 has no helper for it)."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    certs = []
    start = data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            break
        certs.append(x509.load_pem_x509_certificate(data[start : stop + len(end)] + b"\n"))
        start = data.find(begin, stop)
    return certs


def flip_last_byte(der):
    """The signature BIT STRING ends the CSR, so this corrupts the signature value only."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


def error_cases(args):
    """Case name -> request bytes. A valid EC P-256 CSR unless the case is about the CSR."""
    ec_key = generate_key("ec-p256")
    good_csr = pem_block("CERTIFICATE REQUEST", make_csr_der(ec_key))
    base = {
        "id": "myapp",
        "trust_domain": args.trust_domain,
        "namespace": "default",
        "csr": good_csr,
        "token_validator": INSECURE,
    }

    def request(**changes):
        return encode_sign_request(**{**base, **changes})

    tampered = {
        key_type: pem_block(
            "CERTIFICATE REQUEST", flip_last_byte(make_csr_der(generate_key(key_type)))
        )
        for key_type in ("ec-p256", "ed25519", "rsa-2048")
    }
    rsa_1024 = pem_block("CERTIFICATE REQUEST", make_csr_der(generate_key("rsa-1024")))
    public_key_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    garbage = bytes(range(256)) * 4

    return {
        # validator selection
        "validator_unknown": request(token_validator=UNKNOWN),
        "validator_kubernetes": request(token_validator=KUBERNETES),
        "validator_jwks": request(token_validator=JWKS),
        "validator_out_of_range": request(token_validator=7),
        # app id
        "id_empty": request(id=""),
        "id_with_dot": request(id="my.app"),
        "id_64_bytes": request(id="a" * 64),
        "id_65_bytes": request(id="a" * 65),
        "id_with_slash": request(id="my/app"),
        "id_with_space": request(id="my app"),
        # namespace
        "namespace_empty": request(namespace=""),
        "namespace_with_slash": request(namespace="de/fault"),
        "namespace_with_space": request(namespace="de fault"),
        # trust domain
        "trust_domain_uppercase": request(trust_domain="Cluster.Local"),
        "trust_domain_invalid_chars": request(trust_domain="cluster$local"),
        # the CSR
        "csr_empty": request(csr=b""),
        "csr_not_pem": request(csr=b"this is not a PEM block at all\n" + garbage),
        "csr_wrong_pem_type": request(csr=public_key_pem),
        "csr_garbage_der": request(csr=pem_block("CERTIFICATE REQUEST", garbage)),
        "csr_legacy_certificate_label": request(
            csr=pem_block("CERTIFICATE", make_csr_der(ec_key))
        ),
        "csr_bad_signature_ec_p256": request(csr=tampered["ec-p256"]),
        "csr_bad_signature_ed25519": request(csr=tampered["ed25519"]),
        "csr_bad_signature_rsa_2048": request(csr=tampered["rsa-2048"]),
        "csr_rsa_1024": request(csr=rsa_1024),
        # message size: the server accepts requests up to 64 KiB
        "request_60_kib": request(csr=b"A" * (60 * 1024)),
        "request_70_kib": request(csr=b"A" * (70 * 1024)),
    }


def run_error_cases(args):
    results = {}
    with open_channel(args.port, args.anchors) as channel:
        for name, request_bytes in error_cases(args).items():
            code, details, _ = call_sign(channel, request_bytes)
            results[name] = {"code": code, "details": details}
    return results


def run_burst(args):
    key = generate_key("ec-p256")
    request = encode_sign_request(
        id="burst",
        trust_domain=args.trust_domain,
        namespace="default",
        csr=pem_block("CERTIFICATE REQUEST", make_csr_der(key)),
        token_validator=INSECURE,
    )
    with open_channel(args.port, args.anchors) as channel:
        stub = channel.unary_unary(
            METHOD, request_serializer=lambda raw: raw, response_deserializer=decode_sign_response
        )
        stub(request, timeout=TIMEOUT_SECONDS)  # warm: the connection is open from here on
        calls = [stub.future(request, timeout=TIMEOUT_SECONDS) for _ in range(args.count)]
        announced = False
        codes = []
        for call in calls:
            try:
                response = call.result()
                codes.append("OK" if b"BEGIN CERTIFICATE" in response["workload_certificate"] else "EMPTY")
            except grpc.RpcError as error:
                codes.append(error.code().name)
            if not announced:
                print("first-done", flush=True)
                announced = True
    return {"codes": codes}


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", type=int, required=True, help="sentry's gRPC port")
    common.add_argument("--anchors", required=True, help="PEM trust anchors (ca.crt)")
    common.add_argument("--out-dir", required=True, help="where to write received files")
    common.add_argument("--trust-domain", default="cluster.local")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    sign = modes.add_parser("sign", parents=[common], help="sign one CSR")
    sign.add_argument("--key-type", required=True, choices=["ec-p256", "ed25519", "rsa-2048"])
    sign.add_argument("--id", default="myapp")
    sign.add_argument("--namespace", default="default")
    sign.add_argument("--token-validator", type=int, default=INSECURE)
    sign.add_argument("--label", default="sign", help="file name tag for the written files")
    modes.add_parser("error-cases", parents=[common], help="send the list of bad requests")
    burst = modes.add_parser("burst", parents=[common], help="many calls at once across a stop")
    burst.add_argument("--count", type=int, default=50)

    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    runners = {"sign": run_sign, "error-cases": run_error_cases, "burst": run_burst}
    result = runners[args.mode](args)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
