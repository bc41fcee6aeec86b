/**
 * `deno task bench`: runs every benchmark in this folder on a fresh tmpfs
 * (this host's disk throttles after bursts, see FINDINGS) and prints each
 * figure next to the peer measured in the same run (GNU tar, runc, an OCI
 * layout), as medians of interleaved runs and ratios.
 *
 * Run as root (it mounts a tmpfs). `--only NAME[,NAME]` runs a subset, for
 * example `deno task bench --only apply,resolve`. `--json FILE` also writes
 * the figures as JSON.
 *
 * @module
 */
import { join } from "@std/path";

/** What each benchmark module receives. */
export interface BenchContext {
  /** A tmpfs mounted for this run, removed afterwards. */
  tmpfs: string;
  /** Prints one progress line. */
  log: (line: string) => void;
}

/** What each benchmark module exports. */
export type BenchFn = (ctx: BenchContext) => Promise<Record<string, number | string>>;

const ALL = ["cli", "tar", "apply", "resolve", "pull", "mirror", "run"];

async function sh(cmd: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

async function main(): Promise<number> {
  const args = [...Deno.args];
  const onlyAt = args.indexOf("--only");
  const only = onlyAt >= 0 ? args[onlyAt + 1].split(",") : ALL;
  const jsonAt = args.indexOf("--json");
  const jsonFile = jsonAt >= 0 ? args[jsonAt + 1] : undefined;
  if (Deno.uid() !== 0) {
    console.error("strata bench: run as root (it mounts a tmpfs to measure on)");
    return 1;
  }
  const tmpfs = await Deno.makeTempDir({ prefix: "strata-bench-" });
  await sh("mount", "-t", "tmpfs", "-o", "size=12g,mode=0755", "tmpfs", tmpfs);
  const results: Record<string, Record<string, number | string>> = {};
  let failed = 0;
  try {
    for (const name of only) {
      const file = join(import.meta.dirname!, `${name}.ts`);
      try {
        await Deno.stat(file);
      } catch {
        console.error(`bench ${name}: ${file} missing, skipped`);
        continue;
      }
      const mod = await import(`./${name}.ts`) as { bench?: BenchFn };
      if (!mod.bench) continue;
      const dir = join(tmpfs, name);
      await Deno.mkdir(dir);
      console.error(`== ${name}`);
      try {
        results[name] = await mod.bench({ tmpfs: dir, log: (l) => console.error(`   ${l}`) });
        for (const [k, v] of Object.entries(results[name])) console.log(`${name}.${k}\t${v}`);
      } catch (e) {
        failed++;
        console.error(`bench ${name} failed: ${e instanceof Error ? e.stack : e}`);
      } finally {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  } finally {
    await sh("umount", "-l", tmpfs).catch(() => {});
    await Deno.remove(tmpfs, { recursive: true }).catch(() => {});
  }
  if (jsonFile) await Deno.writeTextFile(jsonFile, JSON.stringify(results, null, 2) + "\n");
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
