// Unit tests of the decisions taken when a connection ends.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { closeDecision, sseRefusal } from "../../build/unit/policy.js";

describe("closeDecision", () => {
  const bye = (reason, reconnect, retry_after_ms = 0) => ({ type: "bye", reason, reconnect, retry_after_ms });

  test("follows bye: reason, reconnect and the retry hint", () => {
    assert.deepEqual(closeDecision(bye("shutdown", true, 1406), { opened: true, code: 3001 }), {
      stop: false,
      reason: "shutdown",
      hintMs: 1406,
    });
    assert.deepEqual(closeDecision(bye("kicked", false), { opened: true }), { stop: true, reason: "kicked", hintMs: 0 });
    // bye wins over the close code.
    assert.equal(closeDecision(bye("message_too_big", true), { opened: true, code: 1009 }).stop, false);
  });

  test("without bye, 3500-3999 stop and everything else reconnects", () => {
    assert.deepEqual(closeDecision(null, { opened: true, code: 3503, reason: "kicked" }), {
      stop: true,
      reason: "close 3503",
      hintMs: 0,
    });
    assert.equal(closeDecision(null, { opened: true, code: 3999 }).stop, true);
    assert.equal(closeDecision(null, { opened: true, code: 3499 }).stop, false);
    assert.deepEqual(closeDecision(null, { opened: false, code: 1006, reason: "close 1006" }), {
      stop: false,
      reason: "close 1006",
      hintMs: 0,
    });
    assert.equal(closeDecision(null, { opened: false }).reason, "connect_failed");
  });
});

describe("sseRefusal", () => {
  const refused = (code) => ({ opened: false, status: 400, error: { code, message: "m" } });

  test("token refusals stop, like bye unauthorized", () => {
    for (const code of ["invalid_token", "token_expired", "auth_required"]) {
      assert.deepEqual(sseRefusal(refused(code), true), { action: "stop", reason: "unauthorized" });
    }
  });

  test("group refusals drop the unconfirmed groups, or stop when there are none", () => {
    for (const code of ["forbidden", "invalid_group", "too_many_groups"]) {
      assert.deepEqual(sseRefusal(refused(code), true), { action: "drop_groups", reason: code });
      assert.deepEqual(sseRefusal(refused(code), false), { action: "stop", reason: code });
    }
  });

  test("the rest", () => {
    assert.equal(sseRefusal(refused("origin_not_allowed"), false).action, "stop");
    assert.equal(sseRefusal(refused("invalid_position"), false).action, "reset_positions");
    assert.equal(sseRefusal(refused("shutting_down"), true).action, "retry");
    assert.equal(sseRefusal(refused("broker_unavailable"), false).action, "retry");
    // EventSource: refused, reason unknown.
    assert.deepEqual(sseRefusal({ opened: false, refused: true }, true), { action: "drop_groups", reason: "connect_refused" });
    assert.deepEqual(sseRefusal({ opened: false, refused: true }, false), { action: "retry", reason: "connect_refused" });
  });
});
