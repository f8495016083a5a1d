import assert from "node:assert/strict";
import { suggestCommand, unknownCommandMessage } from "../../src/cli/commands.ts";

Deno.test("suggestCommand: the command within edit distance 2, none beyond", () => {
  assert.equal(suggestCommand("mitn"), "mint");
  assert.equal(suggestCommand("inti"), "init");
  assert.equal(suggestCommand("expiri"), "expiry");
  assert.equal(suggestCommand("RENEW"), "renew");
  assert.equal(suggestCommand("srve"), "serve");
  assert.equal(suggestCommand("frobnicate"), undefined);
  assert.equal(suggestCommand("xyzzy"), undefined);
});

Deno.test("unknownCommandMessage: 'did you mean' when close, the help otherwise", () => {
  assert.match(unknownCommandMessage("inspekt"), /did you mean 'inspect'\?/);
  assert.match(unknownCommandMessage("frobnicate"), /unknown command "frobnicate"\n[^]*Commands:/);
});
