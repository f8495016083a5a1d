/**
 * DER encoders (src/x509/der.ts) against X.690's length forms and RFC 5280's time rules, with
 * expected bytes written out by hand, and against our decoder for every length up to 70,000.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as der from "../../src/x509/der.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

Deno.test("tlv: short form below 128, long form with the fewest octets above", () => {
  const cases: [number, string][] = [
    [0, "0400"],
    [1, "0401"],
    [127, "047f"],
    [128, "048180"],
    [255, "0481ff"],
    [256, "04820100"],
    [65535, "0482ffff"],
    [65536, "0483010000"],
  ];
  for (const [length, header] of cases) {
    const encoded = der.tlv(der.Tag.OCTET_STRING, new Uint8Array(length).fill(0xab));
    assert.deepEqual(hex(encoded.subarray(0, header.length / 2)), header, `length ${length}`);
    assert.deepEqual(encoded.length, header.length / 2 + length);
    assert.deepEqual(encoded.subarray(header.length / 2).every((b) => b === 0xab), true);
  }
});

Deno.test("tlv: several contents are concatenated in order, and decode back", () => {
  const encoded = der.sequence(der.smallInteger(5), der.NULL, der.octetString(Uint8Array.of(1, 2)));
  assert.deepEqual(hex(encoded), "300902010505000402" + "0102");
  for (let length = 0; length < 70_000; length += length < 300 ? 1 : 997) {
    const element = der.readElement(der.tlv(0x04, new Uint8Array(length)), 0, undefined, true);
    assert.deepEqual(element.end - element.contentStart, length);
  }
});

Deno.test("time: UTCTime from 1950 through 2049, GeneralizedTime outside, seconds only", () => {
  const cases: [string, string][] = [
    ["2049-12-31T23:59:59.999Z", "17 0d 3439313233313233353935395a"],
    ["2050-01-01T00:00:00Z", "18 0f 32303530303130313030303030305a"],
    ["1950-01-01T00:00:00Z", "17 0d 3530303130313030303030305a"],
    ["1949-12-31T23:59:59Z", "18 0f 31393439313233313233353935395a"],
    ["2026-12-05T04:03:21.500Z", "17 0d 3236313230353034303332315a"],
    ["0001-02-03T04:05:06Z", "18 0f 30303031303230333034303530365a"],
  ];
  for (const [iso, expected] of cases) {
    const encoded = der.time(new Date(iso));
    assert.deepEqual(hex(encoded), expected.replaceAll(" ", ""), iso);
    const element = der.readElement(encoded);
    assert.deepEqual(
      der.decodeTime(encoded, element).toISOString(),
      new Date(Math.floor(Date.parse(iso) / 1000) * 1000).toISOString(),
    );
  }
  assert.throws(() => der.time(new Date("+010000-01-01T00:00:00Z")), RangeError);
  assert.throws(() => der.time(new Date(NaN)), RangeError);
});
