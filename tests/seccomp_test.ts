/**
 * Seccomp profiles without containers: the translation from docker's and
 * podman's format to the runtime spec's `linux.seccomp` on the shapes docker
 * documents (conditional includes and excludes by capability, architecture
 * and kernel version, archMap, errnoRet, defaultErrnoRet, podman's errno
 * names), the strict validation of malformed profiles (one error naming the
 * file and the field), the built-in profile (the strict validator accepts it,
 * and it translates as the trusted fast path does), the real host's
 * containers-common profile, and the spec options built on them.
 * tests/seccomp_run_test.ts runs real containers under these filters.
 *
 * @module
 */
import { join } from "@std/path";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import {
  defaultSeccompProfile,
  isDefaultSeccomp,
  type LinuxSeccomp,
  nativeSeccompArch,
  runningKernel,
  SeccompProfile,
  SeccompProfileError,
} from "../bundle/seccomp.ts";
import {
  loadSeccompProfile,
  parseSeccompProfile,
  validatedDefaultSeccompProfile,
} from "../bundle/seccomp_profile.ts";
import {
  hostDevices,
  withCapAdd,
  withCapDrop,
  withDefaultSeccomp,
  withNoNewPrivileges,
  withoutSeccomp,
  withPrivileged,
  withSeccompProfile,
} from "../bundle/security.ts";
import { hostCapabilities, parseCapability } from "../bundle/capabilities.ts";
import { DEFAULT_CAPABILITIES, newSpec, SpecError } from "../bundle/spec.ts";
import { withArgs } from "../bundle/options.ts";
import { adaptSpecToHost, specJSON } from "../bundle/writer.ts";
import { parseArgs, UsageError } from "../cli/args.ts";
import { securityOptions } from "../cli/cmd_run.ts";
import { COMMANDS, GLOBAL_OPTIONS } from "../cli/spec.ts";
import { isRoot, tempDir } from "./_helpers.ts";

const amd64 = { arch: "amd64", kernel: [6, 18] as const, x32: true };

/** The names a translation allows unconditionally (no argument rules). */
function allowed(s: LinuxSeccomp | undefined): Set<string> {
  return new Set(
    (s?.syscalls ?? []).filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args).flatMap((r) =>
      r.names
    ),
  );
}

/** The rules for `name`. */
function rulesFor(s: LinuxSeccomp | undefined, name: string) {
  return (s?.syscalls ?? []).filter((r) => r.names.includes(name));
}

Deno.test("translation: docker's conditional shapes by capability, arch and minKernel", () => {
  const p = parseSeccompProfile(
    {
      defaultAction: "SCMP_ACT_ERRNO",
      defaultErrnoRet: 1,
      syscalls: [
        { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
        { name: "getpid", action: "SCMP_ACT_ALLOW" },
        // includes.caps: every capability listed must be held
        { names: ["mount"], action: "SCMP_ACT_ALLOW", includes: { caps: ["CAP_SYS_ADMIN"] } },
        {
          names: ["both"],
          action: "SCMP_ACT_ALLOW",
          includes: { caps: ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"] },
        },
        // excludes.caps: any capability listed drops the rule
        {
          names: ["clone3"],
          action: "SCMP_ACT_ERRNO",
          errnoRet: 38,
          excludes: { caps: ["CAP_SYS_ADMIN", "CAP_BPF"] },
        },
        // arches: libseccomp's name of the native architecture
        { names: ["arch_prctl"], action: "SCMP_ACT_ALLOW", includes: { arches: ["amd64", "x32"] } },
        { names: ["set_tls"], action: "SCMP_ACT_ALLOW", includes: { arches: ["arm", "arm64"] } },
        {
          names: ["clone"],
          action: "SCMP_ACT_ALLOW",
          args: [{ index: 0, value: 2114060288, op: "SCMP_CMP_MASKED_EQ" }],
          excludes: { arches: ["s390", "s390x"] },
        },
        {
          names: ["clone"],
          action: "SCMP_ACT_ALLOW",
          args: [{ index: 1, value: 2114060288, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }],
          includes: { arches: ["s390", "s390x"] },
        },
        // minKernel, both ways
        { names: ["ptrace"], action: "SCMP_ACT_ALLOW", includes: { minKernel: "4.8" } },
        { names: ["old_only"], action: "SCMP_ACT_ALLOW", excludes: { minKernel: "5.4" } },
        { names: ["new_only"], action: "SCMP_ACT_ALLOW", includes: { minKernel: "6.19" } },
      ],
    },
    "conditional.json",
  );
  const none = p.translate({ capabilities: [], ...amd64 })!;
  assertEquals(none.defaultAction, "SCMP_ACT_ERRNO");
  assertEquals(none.defaultErrnoRet, 1);
  assertEquals(none.architectures, undefined, "no architectures, no archMap: native only");
  assertEquals([...allowed(none)].sort(), ["arch_prctl", "getpid", "ptrace", "read", "write"]);
  assertEquals(rulesFor(none, "clone3"), [{
    names: ["clone3"],
    action: "SCMP_ACT_ERRNO",
    errnoRet: 38,
  }]);
  assertEquals(rulesFor(none, "clone").map((r) => r.args?.[0].index), [0]);

  const admin = p.translate({ capabilities: ["CAP_SYS_ADMIN"], ...amd64 })!;
  assert(allowed(admin).has("mount"));
  assert(!allowed(admin).has("both"), "includes.caps needs every capability listed");
  assertEquals(rulesFor(admin, "clone3"), [], "any excluded capability drops the rule");
  const both = p.translate({ capabilities: ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], ...amd64 })!;
  assert(allowed(both).has("both"));
  assertEquals(rulesFor(p.translate({ capabilities: ["CAP_BPF"], ...amd64 }), "clone3"), []);

  const arm64 = p.translate({ capabilities: [], arch: "arm64", kernel: [4, 4] })!;
  assert(allowed(arm64).has("set_tls") && !allowed(arm64).has("arch_prctl"));
  assert(!allowed(arm64).has("ptrace"), "minKernel 4.8 on a 4.4 kernel");
  assert(allowed(arm64).has("old_only"), "excludes.minKernel 5.4 keeps it on 4.4");
  assert(!allowed(p.translate({ capabilities: [], ...amd64 })).has("old_only"));
  assert(!allowed(p.translate({ capabilities: [], ...amd64 })).has("new_only"));
  assert(allowed(p.translate({ capabilities: [], arch: "amd64", kernel: [7, 0] })).has("new_only"));
  assert(
    allowed(p.translate({ capabilities: [], arch: "amd64", kernel: [6, 19] })).has("new_only"),
  );

  const s390 = p.translate({ capabilities: [], arch: "s390x", kernel: [6, 1] })!;
  assertEquals(rulesFor(s390, "clone").map((r) => r.args?.[0]), [{
    index: 1,
    value: 2114060288,
    valueTwo: 0,
    op: "SCMP_CMP_MASKED_EQ",
  }]);
});

Deno.test("translation: archMap brings the native arch's companions; architectures pass through", () => {
  const p = parseSeccompProfile({
    defaultAction: "SCMP_ACT_ERRNO",
    archMap: [
      { architecture: "SCMP_ARCH_X86_64", subArchitectures: ["SCMP_ARCH_X86", "SCMP_ARCH_X32"] },
      { architecture: "SCMP_ARCH_AARCH64", subArchitectures: ["SCMP_ARCH_ARM"] },
      { architecture: "SCMP_ARCH_S390X", subArchitectures: ["SCMP_ARCH_S390"] },
      { architecture: "SCMP_ARCH_RISCV64", subArchitectures: null },
    ],
    syscalls: [],
  }, "archmap.json");
  const arches = (arch: string, x32?: boolean) =>
    p.translate({ capabilities: [], arch, kernel: [6, 1], x32 })?.architectures;
  assertEquals(arches("amd64", true), ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
  assertEquals(arches("amd64", false), ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
  assertEquals(arches("arm64"), ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
  assertEquals(arches("s390x"), ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]);
  assertEquals(arches("riscv64"), ["SCMP_ARCH_RISCV64"]);
  assertEquals(arches("ppc64le"), undefined, "no entry for it: the native arch alone");
  // An explicit architectures list is kept as it is, x32 too.
  const explicit = parseSeccompProfile({
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
  });
  assertEquals(
    explicit.translate({ capabilities: [], arch: "amd64", x32: false })?.architectures,
    ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
  );
});

Deno.test("translation: errno names, podman's nulls, flags and listeners, {} disables", () => {
  // The shape containers-common writes: errno names beside errnoRet, empty
  // includes/excludes, null args, defaultErrno.
  const podman = parseSeccompProfile(
    JSON.stringify({
      defaultAction: "SCMP_ACT_ERRNO",
      defaultErrnoRet: 38,
      defaultErrno: "ENOSYS",
      archMap: null,
      syscalls: [
        {
          names: ["bdflush"],
          action: "SCMP_ACT_ERRNO",
          args: [],
          comment: "",
          includes: {},
          excludes: {},
          errnoRet: 1,
          errno: "EPERM",
        },
        { names: ["socket"], action: "SCMP_ACT_ALLOW", args: null, includes: { caps: null } },
        { names: ["keyctl"], action: "SCMP_ACT_ERRNO", errno: "EACCES" },
        { names: ["uselib"], action: "SCMP_ACT_ERRNO", errno: "95" },
      ],
    }),
    "podman-style.json",
  );
  const s = podman.translate({ capabilities: [], ...amd64 })!;
  assertEquals(s.defaultErrnoRet, 38);
  assertEquals(s.syscalls, [
    { names: ["bdflush"], action: "SCMP_ACT_ERRNO", errnoRet: 1 },
    { names: ["socket"], action: "SCMP_ACT_ALLOW" },
    { names: ["keyctl"], action: "SCMP_ACT_ERRNO", errnoRet: 13 },
    { names: ["uselib"], action: "SCMP_ACT_ERRNO", errnoRet: 95 },
  ]);

  const notify = parseSeccompProfile({
    defaultAction: "SCMP_ACT_ALLOW",
    flags: ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    listenerPath: "/run/agent.sock",
    listenerMetadata: "x=1",
    syscalls: [{ names: ["mount"], action: "SCMP_ACT_NOTIFY" }],
  }).translate({ capabilities: [], ...amd64 });
  assertEquals(notify?.flags, ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]);
  assertEquals([notify?.listenerPath, notify?.listenerMetadata], ["/run/agent.sock", "x=1"]);

  // docker and podman: no default action and no rules means no filter at all.
  const empty = parseSeccompProfile("{}", "empty.json");
  assert(empty.disabled);
  assertEquals(empty.translate({ capabilities: [] }), undefined);
});

Deno.test("translation: docker's documented example (defaultAction ALLOW, one call per entry)", () => {
  const p = parseSeccompProfile({
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [
      { name: "getcwd", action: "SCMP_ACT_ERRNO" },
      { name: "mount", action: "SCMP_ACT_ERRNO" },
      { name: "setns", action: "SCMP_ACT_ERRNO" },
      { name: "chmod", action: "SCMP_ACT_ERRNO" },
    ],
  }, "docs.json");
  const s = p.translate({ capabilities: [...DEFAULT_CAPABILITIES], ...amd64 })!;
  assertEquals(s.defaultAction, "SCMP_ACT_ALLOW");
  assertEquals(s.syscalls?.map((r) => r.names), [["getcwd"], ["mount"], ["setns"], ["chmod"]]);
});

Deno.test("translation: 64-bit argument values stay exact and reach config.json exactly", async () => {
  const text = `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
    "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 18446744069414584320,
    "valueTwo": 18446744073709551615, "op": "SCMP_CMP_MASKED_EQ"}]}]}`;
  const p = parseSeccompProfile(text, "big.json");
  const arg = p.translate({ capabilities: [], ...amd64 })!.syscalls![0].args![0];
  assertEquals(arg.value, 18446744069414584320n);
  assertEquals(arg.valueTwo, 18446744073709551615n);
  const spec = await newSpec(withArgs("true"), withSeccompProfile(p));
  const json = specJSON(spec);
  assertStringIncludes(json, '"value":18446744069414584320');
  assertStringIncludes(json, '"valueTwo":18446744073709551615');
  // Integers that fit keep being plain numbers.
  assertStringIncludes(specJSON(await newSpec(withArgs("true"))), '"value":2114060288');
});

/** Parses `profile` and returns the error's message (the test fails when it parses). */
function problem(profile: unknown, source = "/etc/p.json"): string {
  const e = assertThrows(
    () => parseSeccompProfile(typeof profile === "string" ? profile : profile, source),
    SeccompProfileError,
  );
  assertStringIncludes(e.message, `seccomp profile ${source}: `, "the message names the file");
  assert(!e.message.includes("\n"), "one line");
  return e.message;
}

Deno.test("validation: malformed profiles fail with one error naming the file and the field", () => {
  const ok = { names: ["read"], action: "SCMP_ACT_ALLOW" };
  const cases: [unknown, string][] = [
    ["{not json", "not valid JSON"],
    ["[]", "expected a JSON object, not an array"],
    [{ defaultAction: "SCMP_ACT_DENY" }, 'defaultAction: unknown action "SCMP_ACT_DENY"'],
    [{ defaultAction: "SCMP_ACT_ERNO" }, 'did you mean "SCMP_ACT_ERRNO"?'],
    [{ defaultAction: 1 }, "defaultAction: expected action (a string), not a number 1"],
    [{ syscalls: [ok] }, "defaultAction: is required"],
    [{ defaultAction: "SCMP_ACT_NOTIFY", listenerPath: "/x" }, "cannot be the default action"],
    [{ defaultAction: "SCMP_ACT_ALLOW", defaultErrnoRet: 1 }, "SCMP_ACT_ALLOW takes no errno"],
    [{ defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 5000 }, "from 0 to 4095, not 5000"],
    [
      { defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: -1 },
      "defaultErrnoRet: expected an errno",
    ],
    [{ defaultAction: "SCMP_ACT_ERRNO", defaultErrno: "EBOGUS" }, 'unknown errno "EBOGUS"'],
    [
      { defaultAction: "SCMP_ACT_ERRNO", defaultErrno: "EPERM", defaultErrnoRet: 38 },
      'defaultErrno "EPERM" (1) and defaultErrnoRet 38 disagree',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", architectures: "SCMP_ARCH_X86_64" },
      "architectures: expected an array",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", architectures: ["SCMP_ARCH_Z80"] },
      'architectures[0]: unknown architecture "SCMP_ARCH_Z80"',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", archMap: [{ subArchitectures: [] }] },
      "archMap[0].architecture: is required",
    ],
    [
      {
        defaultAction: "SCMP_ACT_ERRNO",
        archMap: [{ architecture: "SCMP_ARCH_X86_64", subArchitectures: ["x86"] }],
      },
      'archMap[0].subArchitectures[0]: unknown architecture "x86"',
    ],
    [
      {
        defaultAction: "SCMP_ACT_ERRNO",
        architectures: ["SCMP_ARCH_X86_64"],
        archMap: [{ architecture: "SCMP_ARCH_X86_64" }],
      },
      "both architectures and archMap are given",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", flags: ["SECCOMP_FILTER_FLAG_NOPE"] },
      "flags[0]: unknown flag",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", listenerMetadata: "x" },
      "listenerMetadata: is given without listenerPath",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", listenerPath: "agent.sock" },
      "listenerPath: expected an absolute path",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", defaultAktion: "x" },
      'defaultAktion: unknown field (did you mean "defaultAction"?)',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: {} },
      "syscalls: expected an array, not an object",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: ["read"] },
      'syscalls[0]: expected an object, not a string "read"',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: "read", action: "SCMP_ACT_ALLOW" }] },
      'syscalls[0].names: expected an array, not a string "read"',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: [1], action: "SCMP_ACT_ALLOW" }] },
      "syscalls[0].names[0]: expected a string, not a number 1",
    ],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ names: ["read; rm"], action: "SCMP_ACT_ALLOW" }],
    }, "is not a system call name"],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: [], action: "SCMP_ACT_ALLOW" }] },
      "syscalls[0]: names the system calls",
    ],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ name: "a", names: ["b"], action: "SCMP_ACT_ALLOW" }],
    }, "both name and names are given"],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: ["read"] }] },
      "syscalls[0].action: is required",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: ["read"], action: "ALLOW" }] },
      'syscalls[0].action: unknown action "ALLOW"',
    ],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ names: ["read"], action: "SCMP_ACT_ALLOW", errnoRet: 1 }],
    }, "syscalls[0].errnoRet: SCMP_ACT_ALLOW takes no errno"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", errnoRet: "1" }],
    }, "syscalls[0].errnoRet: expected an errno"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ names: ["read"], action: "SCMP_ACT_NOTIFY" }],
    }, "SCMP_ACT_NOTIFY needs a listenerPath"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] }],
    }, "syscalls[0].args[0].index: expected an argument index from 0 to 5, not 6"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: "0", value: 1, op: "SCMP_CMP_EQ" }] }],
    }, 'args[0].index: expected an argument index from 0 to 5, not "0"'],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 0, op: "SCMP_CMP_EQ" }] }],
    }, "syscalls[0].args[0].value: is required"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 0, value: -1, op: "SCMP_CMP_EQ" }] }],
    }, "value: expected an unsigned 64-bit integer, not a number -1"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 0, value: 1.5, op: "SCMP_CMP_EQ" }] }],
    }, "not a number 1.5"],
    [
      `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 18446744073709551616, "op": "SCMP_CMP_EQ"}]}]}`,
      "expected an unsigned 64-bit integer, not 18446744073709551616",
    ],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 0, value: 1, op: "SCMP_CMP_LIKE" }] }],
    }, 'syscalls[0].args[0].op: unknown operator "SCMP_CMP_LIKE"'],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, args: [{ index: 0, value: 1 }] }] },
      "syscalls[0].args[0].op: is required",
    ],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, args: [{ index: 0, value: 1, op: "SCMP_CMP_EQ", mask: 1 }] }],
    }, "syscalls[0].args[0].mask: unknown field"],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, exclude: { caps: ["CAP_SYS_ADMIN"] } }],
    }, 'syscalls[0].exclude: unknown field (did you mean "excludes"?)'],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, includes: { caps: ["CAP_SYS_ADMN"] } }],
    }, 'syscalls[0].includes.caps[0]: unknown capability "CAP_SYS_ADMN"'],
    [{
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [{ ...ok, includes: { caps: "CAP_SYS_ADMIN" } }],
    }, "syscalls[0].includes.caps: expected an array"],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, excludes: { arches: ["x86_64"] } }] },
      'syscalls[0].excludes.arches[0]: unknown architecture "x86_64"',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, includes: { minKernel: "4" } }] },
      'expected a kernel version "<major>.<minor>" such as "4.8", not "4"',
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, includes: { minKernel: 4.8 } }] },
      "includes.minKernel: expected a string, not a number 4.8",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, includes: { minKernel: "0.0" } }] },
      "cannot be 0.0",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, includes: { os: "linux" } }] },
      "syscalls[0].includes.os: unknown field",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, errno: "EPERM" }] },
      "SCMP_ACT_ALLOW takes no errno",
    ],
    [
      { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ ...ok, comment: 7 }] },
      "syscalls[0].comment: expected a string",
    ],
  ];
  for (const [profile, want] of cases) {
    assertStringIncludes(problem(profile), want, JSON.stringify(profile));
  }
});

Deno.test("validation: files that cannot be read name the file", async () => {
  await using dir = await tempDir();
  const missing = join(String(dir), "missing.json");
  assertStringIncludes(
    assertThrows(() => loadSeccompProfile(missing), SeccompProfileError).message,
    `seccomp profile ${missing}: cannot read it`,
  );
  assertStringIncludes(
    assertThrows(() => loadSeccompProfile(String(dir)), SeccompProfileError).message,
    `seccomp profile ${dir}: cannot read it`,
  );
  const bad = join(String(dir), "bad.json");
  await Deno.writeTextFile(
    bad,
    '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALOW"}]}',
  );
  assertEquals(
    assertThrows(() => withSeccompProfile(bad), SeccompProfileError).message,
    `seccomp profile ${bad}: syscalls[0].action: unknown action "SCMP_ACT_ALOW" ` +
      `(did you mean "SCMP_ACT_ALLOW"?)`,
  );
});

Deno.test("the built-in profile: valid to the strict validator, and the same translated", () => {
  const strict = validatedDefaultSeccompProfile();
  const fast = defaultSeccompProfile();
  const contexts = [
    { capabilities: [...DEFAULT_CAPABILITIES], ...amd64 },
    { capabilities: [...DEFAULT_CAPABILITIES], arch: "amd64", kernel: [4, 4] as const, x32: false },
    {
      capabilities: ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_BPF"],
      arch: "arm64",
      kernel: [6, 1] as const,
    },
    { capabilities: [], arch: "s390x", kernel: [5, 10] as const },
    { capabilities: [], arch: "mips64", kernel: [5, 10] as const },
  ];
  for (const c of contexts) assertEquals(fast.translate(c), strict.translate(c), JSON.stringify(c));
  // No value of the built-in profile needs a bigint (it is written as numbers).
  const text = Deno.readTextFileSync(new URL("../bundle/seccomp_default.json", import.meta.url));
  assert(!/\d{16,}/.test(text));
});

Deno.test("the built-in profile: docker's default semantics", () => {
  const p = defaultSeccompProfile();
  const s = p.translate({ capabilities: [...DEFAULT_CAPABILITIES], ...amd64 })!;
  assertEquals([s.defaultAction, s.defaultErrnoRet], ["SCMP_ACT_ERRNO", 1]);
  assertEquals(s.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
  const ok = allowed(s);
  for (
    const n of ["read", "openat", "execve", "futex", "epoll_pwait", "mmap", "chown32", "statx"]
  ) {
    assert(ok.has(n), `${n} allowed`);
  }
  assert(ok.has("chroot"), "CAP_SYS_CHROOT is a default capability");
  // Never, whatever the capabilities: keyrings, kexec, swap, io_uring, obsolete calls.
  const all = p.translate({ capabilities: hostCapabilitiesAll(), ...amd64 })!;
  const everything = new Set(all.syscalls!.flatMap((r) => r.names));
  for (
    const n of [
      "keyctl",
      "add_key",
      "request_key",
      "kexec_load",
      "kexec_file_load",
      "swapon",
      "io_uring_setup",
      "uselib",
      "_sysctl",
      "create_module",
    ]
  ) assert(!everything.has(n), `${n} never allowed`);
  // Without CAP_SYS_ADMIN: no mount, unshare, setns; clone only without namespace flags; clone3 ENOSYS.
  for (const n of ["mount", "umount2", "unshare", "setns", "pivot_root", "bpf", "fsopen"]) {
    assert(rulesFor(s, n).length === 0, `${n} refused without CAP_SYS_ADMIN`);
  }
  assertEquals(rulesFor(s, "clone").map((r) => r.args), [[
    { index: 0, value: 0x7E020000, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" },
  ]]);
  assertEquals(rulesFor(s, "clone3"), [{
    names: ["clone3"],
    action: "SCMP_ACT_ERRNO",
    errnoRet: 38,
  }]);
  // personality: the values docker allows, one rule each.
  assertEquals(
    rulesFor(s, "personality").map((r) => r.args![0].value),
    [0, 8, 0x20000, 0x20008, 0xffffffff],
  );
  // socket: every family but AF_ALG (38) and AF_VSOCK (40).
  assertEquals(rulesFor(s, "socket").map((r) => [r.args![0].op, r.args![0].value]), [
    ["SCMP_CMP_LE", 37],
    ["SCMP_CMP_EQ", 39],
    ["SCMP_CMP_GE", 41],
  ]);
  // With CAP_SYS_ADMIN those open; with CAP_SYS_PTRACE kcmp and friends.
  const admin = allowed(p.translate({ capabilities: ["CAP_SYS_ADMIN"], ...amd64 }));
  for (const n of ["mount", "unshare", "setns", "clone", "clone3", "pivot_root"]) {
    assert(admin.has(n), `${n} with CAP_SYS_ADMIN`);
  }
  assert(!admin.has("kcmp"));
  assert(allowed(p.translate({ capabilities: ["CAP_SYS_PTRACE"], ...amd64 })).has("kcmp"));
  // ptrace from Linux 4.8 on, else only with CAP_SYS_PTRACE.
  assert(ok.has("ptrace"));
  assert(!allowed(p.translate({ capabilities: [], arch: "amd64", kernel: [4, 4] })).has("ptrace"));
  // Per-architecture groups.
  assert(ok.has("arch_prctl") && ok.has("modify_ldt") && !ok.has("set_tls"));
  const arm = p.translate({ capabilities: [], arch: "arm64", kernel: [6, 1] })!;
  assertEquals(arm.architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
  assert(allowed(arm).has("set_tls") && !allowed(arm).has("arch_prctl"));
  assertEquals(
    rulesFor(p.translate({ capabilities: [], arch: "mips64", kernel: [6, 1] }), "clone3")[0]
      .errnoRet,
    89,
    "ENOSYS is 89 on MIPS",
  );
});

function hostCapabilitiesAll(): string[] {
  return [...hostCapabilities(), "CAP_SYS_RESOURCE"];
}

Deno.test("the host's containers-common profile loads and translates", () => {
  const path = "/usr/share/containers/seccomp.json";
  const p = loadSeccompProfile(path);
  const s = p.translate({ capabilities: [...DEFAULT_CAPABILITIES], arch: nativeSeccompArch() })!;
  assertEquals(s.defaultAction, "SCMP_ACT_ERRNO");
  assert(allowed(s).has("read") && allowed(s).has("openat"));
  assert((s.syscalls?.length ?? 0) > 10);
  assertEquals(
    s.architectures?.[0],
    nativeSeccompArch() === "amd64" ? "SCMP_ARCH_X86_64" : s.architectures?.[0],
  );
});

Deno.test("kernel version and architecture of this machine", () => {
  const [major, minor] = runningKernel();
  assert(major >= 4 && Number.isInteger(minor));
  const release = Deno.osRelease();
  assert(release.startsWith(`${major}.${minor}`), release);
  assertEquals(nativeSeccompArch(), Deno.build.arch === "x86_64" ? "amd64" : "arm64");
});

Deno.test("spec options: the default filter follows the final capabilities", async () => {
  const plain = await newSpec(withArgs("true"));
  assert(isDefaultSeccomp(plain.linux?.seccomp));
  assertEquals(plain.linux?.seccomp?.defaultAction, "SCMP_ACT_ERRNO");
  assert(!allowed(plain.linux?.seccomp).has("mount"));
  // A capability added after (or before) the profile opens what it gates.
  const added = await newSpec(withDefaultSeccomp(), withCapAdd("sys_admin"));
  assert(allowed(added.linux?.seccomp).has("mount"));
  assert(added.process?.capabilities?.bounding?.includes("CAP_SYS_ADMIN"));
  const custom = parseSeccompProfile({
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [{ names: ["mkdir"], action: "SCMP_ACT_ERRNO", excludes: { caps: ["CAP_FOWNER"] } }],
  }, "custom.json");
  assertEquals((await newSpec(withSeccompProfile(custom))).linux?.seccomp?.syscalls, []);
  assertEquals(
    (await newSpec(withSeccompProfile(custom), withCapDrop("FOWNER"))).linux?.seccomp?.syscalls,
    [{ names: ["mkdir"], action: "SCMP_ACT_ERRNO" }],
  );
  assert(!isDefaultSeccomp((await newSpec(withSeccompProfile(custom))).linux?.seccomp));
  // Off, and back on.
  assertEquals((await newSpec(withoutSeccomp())).linux?.seccomp, undefined);
  assert(isDefaultSeccomp((await newSpec(withoutSeccomp(), withDefaultSeccomp())).linux?.seccomp));
  // A linux.seccomp an option writes itself is kept; a later choice replaces it.
  const raw: LinuxSeccomp = { defaultAction: "SCMP_ACT_LOG" };
  const own = (s: { linux?: { seccomp?: LinuxSeccomp } }) => {
    (s.linux ??= {}).seccomp = raw;
  };
  assertEquals((await newSpec(own)).linux?.seccomp, raw);
  assertEquals((await newSpec(own, withoutSeccomp())).linux?.seccomp, undefined);
});

Deno.test("spec options: capabilities as docker names them, no-new-privileges", async () => {
  assertEquals(parseCapability("net_raw"), "CAP_NET_RAW");
  assertEquals(parseCapability("Cap_Sys_Admin"), "CAP_SYS_ADMIN");
  assertEquals(parseCapability("all"), "ALL");
  assertEquals(parseCapability("CAP_NOPE"), undefined);
  assertThrows(() => withCapAdd("NOPE"), SpecError, 'unknown capability "NOPE"');
  assertThrows(() => withCapDrop("sys-admin"), SpecError, "unknown capability");
  const dropped = await newSpec(withCapDrop("chown", "CAP_KILL"));
  for (const set of ["bounding", "effective", "permitted"] as const) {
    const caps = dropped.process?.capabilities?.[set] ?? [];
    assert(!caps.includes("CAP_CHOWN") && !caps.includes("CAP_KILL"), set);
    assert(caps.includes("CAP_SETUID"), set);
  }
  const none = await newSpec(withCapDrop("ALL"), withCapAdd("NET_BIND_SERVICE"));
  assertEquals(none.process?.capabilities?.bounding, ["CAP_NET_BIND_SERVICE"]);
  const all = await newSpec(withCapAdd("ALL"));
  assertEquals(
    new Set(all.process?.capabilities?.effective),
    new Set([...DEFAULT_CAPABILITIES, ...hostCapabilities()]),
  );
  assertEquals((await newSpec()).process?.noNewPrivileges, true);
  assertEquals((await newSpec(withNoNewPrivileges(false))).process?.noNewPrivileges, false);
});

Deno.test("spec options: privileged as podman makes it", async () => {
  const spec = await newSpec(withArgs("true"), withPrivileged());
  assertEquals(spec.linux?.seccomp, undefined);
  assertEquals(spec.process?.capabilities?.bounding, [...hostCapabilities()]);
  assertEquals([spec.linux?.maskedPaths, spec.linux?.readonlyPaths], [undefined, undefined]);
  const sys = spec.mounts?.find((m) => m.destination === "/sys");
  assert(sys?.options?.includes("rw") && !sys.options.includes("ro"));
  const devices = hostDevices();
  assert(
    devices.some((d) => d.path === "/dev/null" && d.type === "c" && d.major === 1 && d.minor === 3),
  );
  assert(!devices.some((d) => d.path === "/dev/console" || d.path.startsWith("/dev/pts/")));
  if (isRoot) {
    // Root on the host: the devices are made in the container, the device cgroup opened.
    assertEquals(spec.linux?.devices?.map((d) => d.path), devices.map((d) => d.path));
    assertEquals(spec.linux?.resources?.devices, [{ allow: true, access: "rwm" }]);
  }
  // An explicit profile after --privileged still applies (podman's way).
  const confined = await newSpec(withPrivileged(), withDefaultSeccomp());
  assert(allowed(confined.linux?.seccomp).has("mount"), "with every capability, mount is open");
  assert(isDefaultSeccomp(confined.linux?.seccomp));
});

Deno.test("writer: the default filter survives fitting the spec to this host", async () => {
  const spec = await newSpec(withArgs("true"));
  assertEquals(adaptSpecToHost(spec), []);
  assert(spec.linux?.seccomp, "this kernel runs seccomp filters");
});

Deno.test("translation: a profile built in code, without JSON", () => {
  const p = new SeccompProfile({
    disabled: false,
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: [],
    archMap: [],
    flags: [],
    rules: [{ names: ["kexec_load"], action: "SCMP_ACT_KILL_PROCESS" }],
  }, "code");
  assertEquals(p.translate({ capabilities: [] })?.syscalls, [{
    names: ["kexec_load"],
    action: "SCMP_ACT_KILL_PROCESS",
  }]);
});

const globals = GLOBAL_OPTIONS;
const parse = (...args: string[]) => parseArgs(args, COMMANDS, globals);

Deno.test("cli: --security-opt, --cap-add, --cap-drop, --privileged parse as docker spells them", async () => {
  const p = parse(
    "run",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt=no-new-privileges",
    "--cap-add",
    "SYS_ADMIN",
    "--cap-drop=net_raw",
    "--privileged",
    "img",
    "sh",
  );
  assertEquals(p.options["security-opt"], ["seccomp=unconfined", "no-new-privileges"]);
  assertEquals([p.options["cap-add"], p.options["cap-drop"], p.options.privileged], [
    ["SYS_ADMIN"],
    ["net_raw"],
    true,
  ]);
  // Typos get the parser's suggestion.
  assertThrows(
    () => parse("run", "--security-op", "x", "img"),
    UsageError,
    "did you mean '--security-opt'?",
  );
  assertThrows(() => parse("run", "--cap-ad", "x", "img"), UsageError, "did you mean '--cap-add'?");
  const usage = async (o: Record<string, string[] | boolean>, includes: string) => {
    try {
      await securityOptions(o);
    } catch (e) {
      assert(e instanceof UsageError, String(e));
      assertStringIncludes(e.message, includes);
      return;
    }
    throw new Error(`no usage error for ${JSON.stringify(o)}`);
  };
  await usage({ "cap-add": ["FOO"] }, "option --cap-add: unknown capability 'FOO'");
  await usage(
    { "cap-add": ["chown"], "cap-drop": ["CAP_CHOWN"] },
    "CAP_CHOWN cannot be both added and dropped",
  );
  await usage({ "cap-add": ["all"], "cap-drop": ["ALL"] }, "contradict");
  await usage({ "security-opt": ["seccomp"] }, "seccomp needs =unconfined or =FILE.json");
  await usage({ "security-opt": ["no-new-privileges=maybe"] }, "takes true or false, not 'maybe'");
  await usage({ "security-opt": ["apparmor=unconfined"] }, "apparmor is not supported by strata");
  await usage({ "security-opt": ["seccmp=unconfined"] }, "unknown option 'seccmp=unconfined'");
  assertEquals(await securityOptions({}), []);
  // docker's older KEY:VALUE form, and ALL minus a drop.
  const spec = await newSpec(
    ...await securityOptions({
      "security-opt": ["seccomp:unconfined", "no-new-privileges:false"],
      "cap-add": ["ALL"],
      "cap-drop": ["MKNOD"],
    }),
  );
  assertEquals([spec.linux?.seccomp, spec.process?.noNewPrivileges], [undefined, false]);
  assert(!spec.process?.capabilities?.bounding?.includes("CAP_MKNOD"));
  assert(spec.process?.capabilities?.bounding?.includes("CAP_SYS_ADMIN"));
  // The drop comes first otherwise: --cap-drop ALL --cap-add NET_RAW leaves NET_RAW.
  const only = await newSpec(
    ...await securityOptions({ "cap-add": ["NET_RAW"], "cap-drop": ["ALL"] }),
  );
  assertEquals(only.process?.capabilities?.bounding, ["CAP_NET_RAW"]);
});
