// The fault suite's kill points at calls: which calls of a traced run `when=<n>` would stop.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseCallPoints } from "./lab.ts";

void describe("parseCallPoints", () => {
  void it("keeps the calls in the datastore that are the first of their number in any thread", () => {
    const trace = [
      '100 unlink("/tmp/other/cache") = 0', // outside: counted, not a point
      '100 unlink("/d/.chunks/aa/1" <unfinished ...>',
      '101 unlink("/d/.chunks/bb/2") = 0', // thread 101's first: thread 100 made one already
      "100 <... unlink resumed>) = 0",
      '101 unlink("/d/.chunks/cc/3") = 0', // 101's second, and 100 made 2 already
      '101 unlink("/d/.chunks/dd/4") = 0', // 101's third: no thread made 3 before
      '100 rename("/d/host/x/2026", "/d/host/x/.removing-2026-ab") = 0',
      '102 utimensat(AT_FDCWD, "/d/.chunks/ee/5", [..]) = 0',
      '100 unlink("/dx/y") = 0', // a sibling directory, not under /d
      "100 +++ killed by SIGKILL +++",
    ].join("\n");
    assert.deepEqual(parseCallPoints(trace, "/d"), [
      { syscall: "unlink", nth: 2, path: "/d/.chunks/aa/1" },
      { syscall: "unlink", nth: 3, path: "/d/.chunks/dd/4" },
      { syscall: "rename", nth: 1, path: "/d/host/x/2026" },
      { syscall: "utimensat", nth: 1, path: "/d/.chunks/ee/5" },
    ]);
  });
});
