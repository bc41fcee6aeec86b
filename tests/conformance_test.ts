/**
 * Conformance on real images: images built with buildah (tests/_real_images.ts)
 * are flattened by umoci, the reference, and by strata in every way strata
 * offers (the CLI's `export` from an OCI layout with gzip, zstd and
 * zstd:chunked blobs, a docker-archive and an oci-archive; the library's
 * resolver in both whiteout modes; as root and as an unprivileged user in its
 * own user namespace). podman's image mount
 * (containers/storage's overlay driver) is a second reference. The trees must
 * be equal entry by entry: type, mode (setuid/setgid/sticky included), owner,
 * size, content, symlink target, device numbers, xattrs (file capabilities,
 * user xattrs), hardlink groups, mtimes (files and directories) and names
 * byte for byte (non-ASCII and non-UTF-8 ones). Containers run from strata
 * and from runc on umoci's bundle must print the same.
 *
 * Differences allowed, each justified where it is allowed: the mtime of the
 * root directory itself, which no layer of these images names (umoci leaves
 * it at the epoch, strata's is when the top layer was extracted, podman makes
 * it 0555); a device node in a user namespace (not creatable there: skipped
 * with a warning, as `umoci --rootless` cannot make one either); the link
 * count of directories inside a container (overlayfs reports 1 for merged
 * ones); an xattr with an empty value (docker and containerd set it, as
 * strata does; umoci drops it). And one pinned divergence between strata's own modes, see the last
 * test.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { writeOciLayout } from "../image/build.ts";
import { openImage } from "../image/open.ts";
import { TarApplicator } from "../layer/applicator.ts";
import { TarParser } from "../layer/tar.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { decodeName, encodeName } from "../sys/name.ts";
import { treeRecord } from "../layer/record.ts";
import { OverlayMount } from "../overlay/mount.ts";
import { CachingLayerResolver, type ResolveMode } from "../overlay/resolver.ts";
import {
  denoPath,
  ensureTestUser,
  have,
  isRoot,
  mountsBelow,
  repoRoot,
  run,
  runAsUser,
  sh,
  tempDir,
  withOverlayView,
} from "./_helpers.ts";
import {
  buildBusyboxImages,
  buildDebianImages,
  ensureBuildTools,
  PodmanStore,
  type RealImages,
  umociUnpack,
} from "./_real_images.ts";

const CLI = join(repoRoot, "cli.ts");

/** treeRecord lines, the root directory's mtime left out (see the module doc). */
async function record(dir: string): Promise<string[]> {
  const lines = (await treeRecord(dir, { lines: true })).lines!;
  lines[0] = lines[0].replace(/ m:\S+/, "");
  return lines;
}

/**
 * Asserts two records are equal, showing only the lines that differ. An
 * xattr with an empty value is not compared: docker and containerd set it
 * (they apply Go's `PAXRecords`), and so does strata, while umoci applies
 * Go's `Xattrs`, which drops empty values.
 */
function assertSameTree(actual: string[], expected: string[], what: string): void {
  const noEmpty = (l: string) => l.replace(/ x:[^ =]+=(?= |$)/g, "");
  actual = actual.map(noEmpty);
  expected = expected.map(noEmpty);
  if (actual.join("\n") === expected.join("\n")) return;
  const e = new Set(expected), a = new Set(actual);
  const diff = [
    ...expected.filter((l) => !a.has(l)).map((l) => `- ${l.slice(0, 300)}`),
    ...actual.filter((l) => !e.has(l)).map((l) => `+ ${l.slice(0, 300)}`),
  ];
  throw new Error(
    `${what}: differs from umoci (- umoci, + strata), ${diff.length} lines:\n` +
      diff.slice(0, 60).join("\n"),
  );
}

async function strata(args: string[]): Promise<string> {
  const r = await run(denoPath, ["run", "-A", CLI, ...args]);
  if (r.code !== 0) throw new Error(`strata ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Resolves `ref` with a library resolver in `mode` and records the mounted view. */
async function viewRecord(cache: string, mode: ResolveMode, ref: string): Promise<string[]> {
  const resolver = await CachingLayerResolver.create(cache, { mode });
  const image = await openImage(ref);
  const lowers: string[] = [];
  for (const [i, layer] of image.layers.entries()) {
    lowers.push(await resolver.resolve(layer, image.layers.slice(0, i)));
  }
  return await withOverlayView(cache, lowers, record);
}

/** What a container prints about the image's files (the same script for strata and runc). */
const PROBE = [
  "exec 2>&1",
  "id",
  "cat /etc/motd",
  "/usr/bin/env -i A=1 /usr/bin/env", // a dynamic binary: the loader and libc are intact
  "/usr/bin/suid-env -i B=2 /usr/bin/env",
  "test -u /usr/bin/suid-env && test -g /usr/bin/sgid-env && test -k /tmp && echo modes-ok",
  "cat /srv/long-target-link /srv/file2dir /opt/data/sub/c",
  // Link counts of files only: overlayfs reports 1 for a merged directory
  // (as under docker and podman), a plain directory counts its subdirectories.
  "find /srv /opt /usr/share/doc /home /var/lib /etc/motd ! -type d -exec stat -c '%n|%f|%u:%g|%s|%Y|%h|%N' {} ';' | sort",
  "find /srv /opt /usr/share/doc /home /var/lib -type d -exec stat -c '%n|%f|%u:%g|%s|%Y' {} ';' | sort",
].join("; ");

/** Runs PROBE with runc on umoci's bundle. */
async function runcProbe(bundle: string): Promise<string> {
  const configPath = join(bundle, "config.json");
  const config = JSON.parse(await Deno.readTextFile(configPath));
  config.process.terminal = false;
  // umoci's spec keeps three capabilities; strata gives a container the
  // default set docker and podman give. Give runc the same, so what differs
  // is the filesystem, not root's right to read a 0750 home directory.
  const caps = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
  ];
  config.process.capabilities = {
    bounding: caps,
    effective: caps,
    permitted: caps,
    inheritable: [],
    ambient: [],
  };
  config.process.args = ["/bin/sh", "-c", PROBE];
  await Deno.writeTextFile(configPath, JSON.stringify(config));
  const id = `strata-conf-${crypto.randomUUID().slice(0, 8)}`;
  try {
    return await sh("runc", ["run", "--bundle", bundle, id]);
  } finally {
    await run("runc", ["delete", "--force", id]);
  }
}

/**
 * The rootless side: as the test user, in the user namespace strata makes
 * (ensureUserNamespace), both resolver modes and the CLI's export, each
 * recorded from inside the namespace (so owners and file capabilities read
 * as the image says).
 */
const USER_SCRIPT = `
import { ensureUserNamespace } from "${repoRoot}/overlay/userns.ts";
import { CachingLayerResolver } from "${repoRoot}/overlay/resolver.ts";
import { OverlayMount } from "${repoRoot}/overlay/mount.ts";
import { openImage } from "${repoRoot}/image/open.ts";
import { treeRecord } from "${repoRoot}/layer/record.ts";
const [home, ref] = Deno.args;
await ensureUserNamespace();
const record = async (dir) => {
  const lines = (await treeRecord(dir, { lines: true })).lines;
  lines[0] = lines[0].replace(/ m:\\S+/, "");
  return lines;
};
const out = {};
for (const mode of ["direct", "workdir"]) {
  const cache = home + "/cache-" + mode;
  const r = await CachingLayerResolver.create(cache, { mode });
  const image = await openImage(ref);
  const lowers = [];
  for (let i = 0; i < image.layers.length; i++) {
    lowers.push(await r.resolve(image.layers[i], image.layers.slice(0, i)));
  }
  const view = await Deno.makeTempDir({ dir: cache });
  const m = new OverlayMount({ mountpoint: view, lower: lowers, readonly: true });
  await m.mount();
  try {
    out[mode] = await record(view);
  } finally {
    await m.unmount();
  }
}
const exp = home + "/export";
const p = await new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "${CLI}", "export", "-q", "--cache", home + "/cache-cli", ref, exp],
  stdout: "inherit", stderr: "inherit",
}).output();
if (!p.success) throw new Error("strata export exited " + p.code);
out.cli = await record(exp);
console.log(JSON.stringify(out));
`;

async function rootlessRecords(
  dir: string,
  ref: string,
): Promise<Record<"direct" | "workdir" | "cli", string[]>> {
  const { uid, gid } = await ensureTestUser();
  const home = join(dir, "user");
  await Deno.mkdir(home);
  await Deno.chown(home, uid, gid);
  const script = join(dir, "rootless.ts");
  await Deno.writeTextFile(script, USER_SCRIPT);
  await Deno.writeTextFile(
    `${script}.imports.json`,
    JSON.stringify({ imports: { "@std/path": "node:path" } }),
  );
  const r = await runAsUser([
    denoPath,
    "run",
    "-A",
    "--frozen",
    "--no-config",
    `--import-map=${script}.imports.json`,
    script,
    home,
    ref,
  ]);
  const line = r.stdout.split("\n").find((l) => l.startsWith("{"));
  if (r.code !== 0 || !line) throw new Error(`rootless script exited ${r.code}: ${r.stderr}`);
  return JSON.parse(line);
}

/** Tools the comparison drives; the build tools are installed when missing. */
async function toolsMissing(): Promise<string | undefined> {
  for (const t of ["umoci", "runc"]) {
    if (!(await have(t))) return t;
  }
  return await ensureBuildTools();
}

async function conformance(
  t: Deno.TestContext,
  dir: string,
  images: RealImages,
  options: { rootless: boolean; probe: boolean },
): Promise<void> {
  const umoci: Record<string, string[]> = {};
  const bundles: Record<string, string> = {};
  for (const tag of images.tags) {
    bundles[tag] = join(dir, `umoci-${tag}`);
    umoci[tag] = await record(await umociUnpack(images.layout, tag, bundles[tag]));
  }

  await t.step("strata export (CLI, OCI layout) = umoci unpack, every tag", async () => {
    const cache = join(dir, "cache-cli");
    for (const tag of images.tags) {
      const out = join(dir, `export-${tag}`);
      await strata(["export", "-q", "--cache", cache, `oci:${images.layout}:${tag}`, out]);
      assertSameTree(await record(out), umoci[tag], `export of ${tag}`);
    }
  });

  for (const mode of ["direct", "workdir"] as const) {
    await t.step(`resolver mode ${mode}: the overlay view = umoci unpack, every tag`, async () => {
      const cache = join(dir, `cache-${mode}`);
      for (const tag of images.tags) {
        const lines = await viewRecord(cache, mode, `oci:${images.layout}:${tag}`);
        assertSameTree(lines, umoci[tag], `${mode} view of ${tag}`);
      }
    });
  }

  await t.step(
    "podman's image mount (containers/storage) = strata = umoci, every tag",
    async () => {
      // All but the root directory's own line: containers/storage makes layer
      // roots 0555, umoci and strata 0755 (no layer of these images names it).
      await using podman = await PodmanStore.create(join(dir, "podman"));
      for (const tag of images.tags) {
        const lines = await podman.view(images.layout, tag, record);
        assertSameTree(lines.slice(1), umoci[tag].slice(1), `podman's view of ${tag}`);
      }
    },
  );

  await t.step("zstd and zstd:chunked blobs of the same image: the same tree", async () => {
    // (umoci 0.4 reads no zstd; podman, above, agrees on the gzip image.)
    const cache = join(dir, "cache-zstd");
    for (const tag of images.zstdTags) {
      const out = join(dir, `export-${tag}`);
      await strata(["export", "-q", "--cache", cache, `oci:${images.layout}:${tag}`, out]);
      assertSameTree(await record(out), umoci[images.last], `export of ${tag}`);
    }
  });

  await t.step("docker-archive and oci-archive flatten to the same tree", async () => {
    const cache = join(dir, "cache-archives");
    for (
      const [name, ref] of [
        ["docker-archive", `docker-archive:${images.dockerArchive}`],
        ["oci-archive", `oci-archive:${images.ociArchive}:${images.last}`],
      ]
    ) {
      const out = join(dir, `export-${name}`);
      await strata(["export", "-q", "--cache", cache, ref, out]);
      assertSameTree(await record(out), umoci[images.last], `export of the ${name}`);
    }
  });

  if (options.probe) {
    await t.step("strata run prints what runc on umoci's bundle prints", async () => {
      const expected = await runcProbe(bundles[images.last]);
      assert(expected.includes("modes-ok"), expected);
      assert(expected.includes("uid=0(root)"), expected);
      const ref = `oci:${images.layout}:${images.last}`;
      const cache = join(dir, "cache-cli");
      const got = await strata(["run", "-q", "--cache", cache, ref, "/bin/sh", "-c", PROBE]);
      assertEquals(got, expected);
      if (options.rootless) {
        const { uid, gid } = await ensureTestUser();
        const home = join(dir, "user-run");
        await Deno.mkdir(home);
        await Deno.chown(home, uid, gid);
        const r = await runAsUser([
          denoPath,
          "run",
          "-A",
          CLI,
          "run",
          "-q",
          "--cache",
          join(home, "cache"),
          ref,
          "/bin/sh",
          "-c",
          PROBE,
        ]);
        assertEquals(r.code, 0, r.stderr);
        // Without the device node a user namespace cannot make (see below).
        const noDevice = expected.split("\n").filter((l) => !l.startsWith("/srv/null|"));
        assertEquals(r.stdout, noDevice.join("\n"), "rootless run");
      }
    });
  }

  if (options.rootless) {
    await t.step("rootless (user namespace): both modes and export = umoci unpack", async () => {
      const top = images.tags[images.tags.length - 1]; // every layer, non-UTF-8 names too
      const got = await rootlessRecords(dir, `oci:${images.layout}:${top}`);
      // A user namespace may not mknod a real device (strata skips it with a
      // warning, as `umoci unpack --rootless` does); everything else is equal.
      const expected = umoci[top].filter((l) => !/ 2[0-9]{4} .* d:(?!0,0$)/.test(l));
      assertEquals(umoci[top].length - expected.length, 1, "srv/null left out");
      for (const [what, lines] of Object.entries(got)) {
        assertSameTree(lines, expected, `rootless ${what}`);
      }
    });
  }
  assertEquals(await mountsBelow(dir), []);
}

Deno.test({
  name: "conformance: a busybox image built with buildah, strata vs umoci",
  ignore: !isRoot,
  async fn(t) {
    const missing = await toolsMissing();
    if (missing) throw new Error(`${missing} is needed (apt-get install ${missing})`);
    await using tmp = await tempDir("strata-conformance-");
    const dir = String(tmp);
    const images = await buildBusyboxImages(join(dir, "build"));
    await conformance(t, dir, images, { rootless: true, probe: true });
  },
});

/**
 * The Debian variant (a real distribution: 6k entries, useradd, dpkg --purge)
 * takes about a minute, most of it building the image, so it runs on request:
 * STRATA_CONFORMANCE_DEBIAN=1. Its debootstrap rootfs is bench/fixtures.ts',
 * cached under /var/tmp/strata-bench (built from the apt mirror if missing).
 */
const wantDebian = Deno.env.get("STRATA_CONFORMANCE_DEBIAN") === "1";

Deno.test({
  name:
    "conformance: a Debian image (debootstrap rootfs + a useradd/rm/dpkg layer), strata vs umoci",
  ignore: !isRoot || !wantDebian,
  async fn(t) {
    const missing = await toolsMissing();
    if (missing) throw new Error(`${missing} is needed (apt-get install ${missing})`);
    const { debianRootfsLayer } = await import("../bench/fixtures.ts");
    const fixture = await debianRootfsLayer();
    await using tmp = await tempDir("strata-conformance-");
    const dir = String(tmp);
    const images = await buildDebianImages(join(dir, "build"), fixture.tar);
    await conformance(t, dir, images, { rootless: false, probe: false });
  },
});

// Regression tests for what the comparisons above found.

Deno.test("names: any byte string survives decodeName -> encodeName (surrogate escapes)", () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(1 + (rand() % 12)).map(() => rand() % 256);
    assertEquals(encodeName(decodeName(b)), b);
  }
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x61]);
  assertEquals(encodeName(decodeName(bom)), bom, "a leading BOM is part of the name");
  assertEquals(decodeName(new TextEncoder().encode("日本語 é 😀")), "日本語 é 😀");
  assertEquals(decodeName(new Uint8Array([0x63, 0xe9])), "c\udce9");
  assert(decodeName(new Uint8Array([0xe9])) !== decodeName(new Uint8Array([0xe8])));
});

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

Deno.test("applicator: Latin-1 names that differ in one byte stay two files, with their bytes", async () => {
  await using tmp = await tempDir();
  const root = String(tmp);
  const tar = new TarWriter()
    .directory("d/")
    .file(latin1("d/caf\xe9"), "e-acute")
    .file(latin1("d/caf\xe8"), "e-grave")
    .symlink(latin1("d/link-\xff"), latin1("caf\xe9"))
    .bytes();
  await new TarApplicator().apply(new Blob([tar as Uint8Array<ArrayBuffer>]).stream(), root);
  const ls = await sh("ls", ["-b", join(root, "d")]);
  assertEquals(ls.split("\n").filter(Boolean).sort(), ["caf\\350", "caf\\351", "link-\\377"]);
  const r = await run("sh", ["-c", `cat "$1"/d/link-*`, "sh", root]);
  assertEquals(r.stdout, "e-acute", "the link's target kept its byte too");
});

Deno.test("tar: an empty pax xattr value is an empty xattr; global records are ignored", () => {
  const bytes = new TarWriter()
    .globalPax({ "SCHILY.xattr.user.g": "G" })
    .file("a", "")
    .file("b", "", { xattrs: { "user.g": "", "user.empty": "" } })
    .bytes();
  const seen: Record<string, string[]> = {};
  const parser = new TarParser({
    entry: (h) => void (seen[h.name] = Object.keys(h.xattrs).sort()),
    data: () => {},
    entryEnd: () => {},
  });
  parser.push(bytes);
  parser.end();
  // as Go's archive/tar reads them (docker and containerd set PAXRecords' xattrs, empty ones too)
  assertEquals(seen, { a: [], b: ["user.empty", "user.g"] });
});

Deno.test({
  name: "OverlayMount: read-only over ONE lower mounts, hides its whiteouts, leaves nothing behind",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const dir = String(tmp);
    const layer = join(dir, "layer");
    await Deno.mkdir(layer);
    const tar = new TarWriter().file("kept", "k").file(".wh.gone", "").bytes();
    await new TarApplicator().apply(new Blob([tar as Uint8Array<ArrayBuffer>]).stream(), layer);
    assert((await Deno.lstat(join(layer, "gone"))).isCharDevice, "a 0/0 whiteout in the layer");
    const view = join(dir, "view");
    await Deno.mkdir(view);
    const m = new OverlayMount({ mountpoint: view, lower: [layer], readonly: true });
    await m.mount();
    try {
      assertEquals((await Array.fromAsync(Deno.readDir(view))).map((e) => e.name), ["kept"]);
    } finally {
      await m.unmount();
    }
    assertEquals((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), [
      "layer",
      "view",
    ]);
  },
});

/**
 * GNU tar layers (a CI script's `tar -C dir -cf layer.tar .`): the old GNU
 * format (sparse 'S' entries, 'L'/'K' long names, base-256 ids) and pax with
 * xattrs and pax sparse maps. The reference is GNU tar's own extraction
 * (umoci cannot read GNU 'S' sparse entries; for the pax layer it is compared
 * too).
 */
Deno.test({
  name: "conformance: GNU tar layers (gnu and pax formats) = tar -x = umoci unpack",
  ignore: !isRoot,
  async fn() {
    if (!(await have("umoci"))) throw new Error("umoci is needed (apt-get install umoci)");
    await using tmp = await tempDir("strata-conformance-");
    const dir = String(tmp);
    const src = join(dir, "src");
    const long = "x".repeat(150);
    await sh("sh", [
      "-euc",
      `mkdir -p "$1/a/b" "$1/a/${long}" && cd "$1"
       echo hi > a/b/f && ln a/b/f a/hl
       truncate -s 5M a/sparse && printf data | dd of=a/sparse bs=1 seek=3000000 conv=notrunc 2>/dev/null
       chown 3000000:3000001 a/b/f && setfattr -n user.t -v v a/b/f
       touch -d '2020-01-01 00:00:00.123' a/b/f
       echo l > "a/${long}/${long}" && ln -s "a/${long}/${long}" "a/lnk-${long}"
       mkfifo a/fifo && chmod 4755 a/hl && chmod 0750 . && chown 1000:1000 .`,
      "sh",
      src,
    ]);
    const tars: Record<string, string> = {};
    for (const format of ["gnu", "pax"]) {
      tars[format] = join(dir, `${format}.tar`);
      await sh("tar", [
        "-C",
        src,
        `--format=${format}`,
        "--sparse",
        "--xattrs",
        "--numeric-owner",
        "-cf",
        tars[format],
        ".",
      ]);
    }
    const layout = join(dir, "layout");
    await writeOciLayout(
      layout,
      Object.entries(tars).map(([tag, file]) => ({
        tag,
        images: [{ layers: [{ tar: Deno.readFileSync(file), compression: "none" as const }] }],
      })),
    );
    for (const format of ["gnu", "pax"]) {
      const ref = join(dir, `tar-x-${format}`);
      await Deno.mkdir(ref);
      await sh("tar", [
        "-C",
        ref,
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "-xpf",
        tars[format],
      ]);
      const out = join(dir, `export-${format}`);
      await strata(["export", "-q", "--cache", join(dir, "cache"), `oci:${layout}:${format}`, out]);
      const expected = await record(ref);
      assertSameTree(await record(out), expected, `export of the ${format} layer vs tar -x`);
      if (format === "pax") {
        const rootfs = await umociUnpack(layout, format, join(dir, "umoci"));
        assertSameTree(await record(rootfs), expected, "umoci vs tar -x");
      }
    }
  },
});

/**
 * Where the peers disagree: a layer that writes `lib/foo` (no `lib/` entry)
 * over a lower layer where `lib` is a symlink (merged /usr), or `f/x` where
 * `f` is a lower file. Tools that diff a real filesystem never write such a
 * layer, hand-made tars can. docker, podman (containers/storage) and
 * containerd as root apply a layer into an empty upper directory, so `lib`
 * becomes a directory that hides the lower symlink and `f` a directory that
 * hides the file; umoci follows the symlink into usr/lib (and refuses `f/x`).
 * An opaque marker `lib/.wh..wh..opq` likewise gives an empty directory in
 * the runtimes, where following the link would empty usr/lib. strata does
 * what the runtimes do, in both modes: workdir mode applied through an
 * overlay of the parents and followed the symlink like umoci until it
 * refused to (layer/writer.ts #keepDirMeta, #opaque). A layer with a `lib/`
 * directory entry replaces the symlink everywhere.
 *
 * (A whiteout `lib/.wh.x` there gives the empty directory too, but direct
 * mode, like the runtimes, leaves the 0/0 device in a directory overlayfs
 * does not merge, where readdir lists it though nothing can open it; workdir
 * mode has nothing to remove and writes none. Not compared here.)
 */
Deno.test({
  name:
    "peers disagree: writing or an opaque marker below a lower symlink or file; strata = podman",
  ignore: !isRoot,
  async fn() {
    const missing = await toolsMissing();
    if (missing) throw new Error(`${missing} is needed (apt-get install ${missing})`);
    await using tmp = await tempDir("strata-conformance-");
    const dir = String(tmp);
    const layout = join(dir, "layout");
    const base = new TarWriter().directory("usr/").directory("usr/lib/").file("usr/lib/libc", "c")
      .symlink("lib", "usr/lib").file("f", "a file").bytes();
    const tops: Record<string, [TarWriter, string]> = {
      write: [
        new TarWriter().file("lib/foo", "through the link?").file("f/x", "x"),
        `"." "f" "f/x" "lib" "lib/foo" "usr" "usr/lib" "usr/lib/libc"`,
      ],
      opaque: [
        new TarWriter().file("lib/.wh..wh..opq", "").file("f/.wh..wh..opq", ""),
        `"." "f" "lib" "usr" "usr/lib" "usr/lib/libc"`,
      ],
    };
    await writeOciLayout(
      layout,
      Object.entries(tops).map(([tag, [top]]) => ({
        tag,
        images: [{ layers: [{ tar: base }, { tar: top.bytes() }] }],
      })),
    );
    await using store = await PodmanStore.create(join(dir, "podman"));
    const paths = (lines: string[]) => lines.map((l) => l.split(" ")[0]).join(" ");
    for (const [tag, [, expected]] of Object.entries(tops)) {
      const ref = `oci:${layout}:${tag}`;
      const podman = await store.view(layout, tag, record);
      const direct = await viewRecord(join(dir, "cache-direct"), "direct", ref);
      const workdir = await viewRecord(join(dir, "cache-workdir"), "workdir", ref);
      assertEquals(paths(podman), expected, `podman, ${tag}`);
      assertEquals(paths(direct), expected, `direct, ${tag}`);
      assertSameTree(workdir, direct, `${tag}: workdir vs direct`);
    }
    // umoci: refuses `f/x` under a file; without it, follows the symlink.
    const u = await run("umoci", ["unpack", "--image", `${layout}:write`, join(dir, "umoci")]);
    assert(u.code !== 0, "umoci refuses f/x where f is a file");
  },
});

/**
 * A layer that writes into lower directories without naming them (no `etc/`
 * entry before `etc/.wh.motd`; a hand-made or partial tar): workdir mode
 * applied it through the overlay, and copy-up and the new or removed children
 * left those directories with the time of the extraction, where direct mode
 * and umoci keep the lower directory's metadata.
 */
Deno.test({
  name: "resolver modes: directories a layer writes into without naming them keep their metadata",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir("strata-conformance-");
    const dir = String(tmp);
    const layout = join(dir, "layout");
    const base = new TarWriter()
      .directory("etc/", { mode: 0o750, uid: 5, gid: 6, mtime: 1111 })
      .file("etc/motd", "m", { mtime: 1000 })
      .directory("var/", { mtime: 2222 })
      .directory("var/lib/", { mode: 0o700, mtime: 3333 })
      .file("var/lib/x", "x")
      .bytes();
    const top = new TarWriter({ defaultMtime: 5555 })
      .file("etc/.wh.motd", "")
      .file("etc/new", "n")
      .file("var/lib/.wh..wh..opq", "")
      .file("var/lib/y", "y")
      .bytes();
    await writeOciLayout(layout, [{
      tag: "v",
      images: [{ layers: [{ tar: base }, { tar: top }] }],
    }]);
    const ref = `oci:${layout}:v`;
    const umoci = await record(await umociUnpack(layout, "v", join(dir, "umoci")));
    const direct = await viewRecord(join(dir, "cache-direct"), "direct", ref);
    const workdir = await viewRecord(join(dir, "cache-workdir"), "workdir", ref);
    assertSameTree(direct, umoci, "direct");
    assertSameTree(workdir, umoci, "workdir");
    assert(workdir.some((l) => l.startsWith(`"etc" 40750 5:6 m:1111.0`)), workdir.join("\n"));
  },
});
