/**
 * sys/spawn.ts: a child started through posix_spawn exits with its own
 * status, dies by signal as Deno.Command reports it, starts with the same
 * signal state as under Deno.Command (SIGPIPE default, nothing blocked), and
 * can be signalled until it is reaped, never after.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertThrows } from "@std/assert";
import { spawnInherited } from "../sys/spawn.ts";
import { ErrnoError } from "../sys/libc.ts";
import { tempDir } from "./_helpers.ts";

Deno.test("spawnInherited: exit status, arguments and environment reach the child", async () => {
  await using dir = await tempDir();
  const out = join(String(dir), "out");
  Deno.env.set("STRATA_SPAWN_TEST", "from the parent");
  try {
    const child = spawnInherited("/bin/sh", [
      "-c",
      'printf "%s|%s|%s" "$1" "$2" "$STRATA_SPAWN_TEST" > "$0"; exit 42',
      out,
      "a b",
      "",
    ]);
    assert(child.pid > 0);
    assertEquals(await child.status, { code: 42 });
    assertEquals(await Deno.readTextFile(out), "a b||from the parent");
  } finally {
    Deno.env.delete("STRATA_SPAWN_TEST");
  }
});

Deno.test("spawnInherited: a child killed by a signal reports 128 + the signal", async () => {
  const child = spawnInherited("/bin/sleep", ["30"]);
  assert(child.kill(15));
  assertEquals(await child.status, { code: 143, signal: 15 });
  assertEquals(child.kill(15), false, "a reaped child is never signalled again");
});

Deno.test("spawnInherited: the child starts with nothing blocked and SIGPIPE at its default", async () => {
  await using dir = await tempDir();
  const out = join(String(dir), "status");
  // `exec`: the shell itself is not what is read. dash blocks every signal
  // while it waits for a child, so a grep reading /proc/$$/status caught the
  // shell's wait mask ~40% of the time (Deno.Command's children too).
  const script = 'exec grep -E "^Sig(Ign|Blk):" /proc/self/status > "$0"';
  assertEquals((await spawnInherited("/bin/sh", ["-c", script, out]).status).code, 0);
  const text = await Deno.readTextFile(out);
  const field = (t: string, name: string) =>
    BigInt("0x" + t.match(new RegExp(`^${name}:\\s*([0-9a-f]+)`, "m"))![1]);
  assertEquals(field(text, "SigBlk"), 0n, text);
  // Ignored: what this process ignores (dispositions are inherited, as with
  // Deno.Command), less SIGPIPE (Deno ignores it; `yes | head -1` in the
  // container must end quietly), glibc's two internal signals (32, 33) aside.
  const self = await Deno.readTextFile("/proc/self/status");
  const internal = 3n << 31n;
  const sigpipe = 1n << 12n;
  assertEquals(field(text, "SigIgn") & sigpipe, 0n, text);
  assertEquals(
    field(text, "SigIgn") & ~internal,
    field(self, "SigIgn") & ~internal & ~sigpipe,
    `${text} vs ours ${self.match(/^SigIgn:.*$/m)}`,
  );
});

Deno.test("spawnInherited: a program that cannot be started is an ErrnoError naming it", () => {
  const e = assertThrows(() => spawnInherited("/nonexistent/strata-runtime", []), ErrnoError);
  assertEquals(e.code, "ENOENT");
  assert(e.message.includes("/nonexistent/strata-runtime"), e.message);
});

Deno.test("spawnInherited: many children at once are each waited for", async () => {
  const children = Array.from(
    { length: 20 },
    (_, i) => spawnInherited("/bin/sh", ["-c", `exit ${i}`]),
  );
  const codes = (await Promise.all(children.map((c) => c.status))).map((s) => s.code);
  assertEquals(codes, Array.from({ length: 20 }, (_, i) => i));
});
