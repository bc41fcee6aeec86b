/**
 * Overlay helpers for tests that compare strata's layer dirs with what the
 * kernel's overlayfs makes of them: a mount(8) overlay with `userxattr` (as
 * strata mounts), the xattrs of a path, and a layer dir's record without
 * what the kernel writes on its own.
 *
 * @module
 */
import { treeRecord } from "../layer/record.ts";
import { sh } from "./_helpers.ts";

/** The extended attributes of `p` (not followed if a symlink), by name, as `getfattr` prints their values. */
export function getfattr(p: string): Record<string, string> {
  const out = new Deno.Command("getfattr", {
    args: ["-h", "-d", "-m", "-", "-e", "text", p],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const r: Record<string, string> = {};
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^([^#=][^=]*)="?(.*?)"?$/.exec(line);
    if (m) r[m[1]] = m[2];
  }
  return r;
}

/**
 * Mounts an overlay of `lower` (bottom first) at `at` with mount(8) and
 * `userxattr`, as strata does; read-only without `upper` (and `work`).
 * Returns an unmount function. Root only.
 */
export async function overlay(lower: string[], at: string, upper?: string, work?: string) {
  await Deno.mkdir(at, { recursive: true });
  const lowers = `lowerdir=${[...lower].reverse().join(":")}`;
  await sh("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    upper ? `userxattr,${lowers},upperdir=${upper},workdir=${work}` : `userxattr,${lowers}`,
    at,
  ]);
  return async () => {
    await sh("umount", [at]);
  };
}

/** An xattr filter for `treeRecord`: overlay xattrs the kernel writes on its own are left out; opacity is kept. */
export const overlayInternals = (n: string) =>
  !(n.startsWith("user.overlay.") || n.startsWith("trusted.overlay.")) ||
  n.endsWith(".overlay.opaque");

/** A layer dir's record lines, whiteout times left out (the kernel makes those in merged mode). */
export async function layerLines(dir: string): Promise<string[]> {
  const r = await treeRecord(dir, { lines: true, xattrs: overlayInternals });
  return r.lines!.map((l) => / 20000 \S+ m:\S+ d:0,0$/.test(l) ? l.replace(/ m:\S+/, "") : l);
}
