/**
 * Which cached layers a uid/gid mapping may read (overlay/idmap.ts), on the
 * mappings users meet: root's full range, a namespace mapping 0-65535 to
 * itself, a rootless user's subordinate ids, root alone, a shifted range;
 * and the ids a real extracted layer records (layer/record.ts), implied
 * parent directories and whiteouts included. The same rules in real user
 * namespaces: tests/idmap_userns_test.ts.
 */
import { join } from "@std/path";
import { assert, assertEquals, assertNotEquals } from "@std/assert";
import type { IdMap } from "../overlay/cache.ts";
import {
  describeMisfit,
  idMapKey,
  isTreeIds,
  layerMisfit,
  type LayerOwnership,
  sameIdMap,
  spanMisfit,
} from "../overlay/idmap.ts";
import { idSpans, treeRecord } from "../layer/record.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { CachingLayerResolver, type LayerRecord } from "../overlay/resolver.ts";
import { memoryLayer } from "./_layers.ts";
import { isRoot, tempDir } from "./_helpers.ts";

const map = (uid: IdMap["uid"], gid = uid): IdMap => ({ uid, gid });
const FULL = map([[0, 0, 4294967295]]);
const BELOW_64K = map([[0, 0, 65536]]);
const ROOTLESS = map([[0, 1001, 1], [1, 100000, 65536]]); // a user with /etc/subuid ids
const ROOT_ONLY = map([[0, 1001, 1]]); // the same user without them
const SHIFTED = map([[0, 100000, 65536]]);

/** `security.capability` v2 (VFS_CAP_REVISION_2, effective), cap_net_raw permitted. */
const CAP_NET_RAW = new Uint8Array(20);
CAP_NET_RAW.set([0x01, 0x00, 0x00, 0x02, 0x00, 0x20]);

Deno.test("idSpans: sorted runs of consecutive ids", () => {
  assertEquals(idSpans([]), []);
  assertEquals(idSpans([0]), [[0, 1]]);
  assertEquals(idSpans([5, 3, 4, 4, 1000, 0, 65534, 1001]), [[0, 1], [3, 3], [1000, 2], [
    65534,
    1,
  ]]);
  assertEquals(idSpans(new Set([4294967294, 4294967293])), [[4294967293, 2]]);
});

Deno.test("spanMisfit: the ids a layer holds, not the whole mapping, decide", () => {
  const ids = idSpans([0, 1, 2, 100, 1000, 65534]);
  assertEquals(spanMisfit(ids, FULL.uid, FULL.uid), undefined);
  // Root's cache from a namespace mapping 0-65535 to themselves (the case).
  assertEquals(spanMisfit(ids, FULL.uid, BELOW_64K.uid), undefined);
  // ... but an owner above 65535 is host 70000, which that namespace does not map.
  assertEquals(spanMisfit([[0, 1], [70000, 1]], FULL.uid, BELOW_64K.uid), {
    id: 70000,
    host: 70000,
  });
  // The other way round: written below 65536, read by root: the same host ids.
  assertEquals(spanMisfit(ids, BELOW_64K.uid, FULL.uid), undefined);
  // Shifted: uid 0 was written as host 100000, which root sees as 100000.
  assertEquals(spanMisfit([[0, 1]], SHIFTED.uid, FULL.uid), {
    id: 0,
    host: 100000,
    seenAs: 100000,
  });
  // A rootless user's cache and the same user with only root mapped: root fits ...
  assertEquals(spanMisfit([[0, 1]], ROOTLESS.uid, ROOT_ONLY.uid), undefined);
  // ... uid 1000 (host 100999) does not.
  assertEquals(spanMisfit([[0, 1], [1000, 1]], ROOTLESS.uid, ROOT_ONLY.uid), {
    id: 1000,
    host: 100999,
  });
  // The rootless user's cache read by its shifted subordinate range: uid 0 was host 1001.
  assertEquals(spanMisfit([[0, 1]], ROOTLESS.uid, SHIFTED.uid), { id: 0, host: 1001 });
  // uid 1 was host 100000: the shifted range shows it as 0.
  assertEquals(spanMisfit([[1, 1]], ROOTLESS.uid, SHIFTED.uid), { id: 1, host: 100000, seenAs: 0 });
  // The same function split over other ranges fits; runs crossing range ends are walked.
  const split = [[0, 1001, 1], [1, 100000, 999], [1000, 100999, 64537]] as IdMap["uid"];
  assertEquals(spanMisfit([[0, 65537]], ROOTLESS.uid, split), undefined);
  assertEquals(spanMisfit([[0, 65538]], ROOTLESS.uid, split), { id: 65537 });
  // An unmapped host id that happens to show as the overflow id does not count.
  assertEquals(spanMisfit([[65534, 1]], FULL.uid, SHIFTED.uid), { id: 65534, host: 65534 });
});

Deno.test("layerMisfit: same mapping, lost owners, ids, and an older strata's layers", () => {
  const ids = { uid: idSpans([0, 1000]), gid: idSpans([0, 1000]) };
  assertEquals(layerMisfit({ idmap: FULL, ids }, BELOW_64K), undefined);
  assertEquals(layerMisfit({ idmap: FULL, ids: { uid: [[0, 1]], gid: [[70000, 1]] } }, BELOW_64K), {
    reason: "id",
    kind: "gid",
    id: 70000,
    host: 70000,
  });
  // Owners lost (written with only root mapped): that mapping alone, even
  // by a wider one that maps its every id the same way.
  const lost: LayerOwnership = {
    idmap: ROOT_ONLY,
    ids: { uid: [[0, 1]], gid: [[0, 1]] },
    ownersLost: true,
  };
  assertEquals(layerMisfit(lost, ROOT_ONLY), undefined);
  assertEquals(layerMisfit(lost, ROOTLESS), { reason: "ownersLost" });
  // Written by root only, every owner root (nothing lost): the rootless
  // mapping shows the same tree.
  assertEquals(
    layerMisfit({ idmap: ROOT_ONLY, ids: { uid: [[0, 1]], gid: [[0, 1]] } }, ROOTLESS),
    undefined,
  );
  // No ids recorded: the whole-mapping rule.
  assertEquals(layerMisfit({ idmap: BELOW_64K }, FULL), undefined);
  assertEquals(layerMisfit({ idmap: FULL }, BELOW_64K), { reason: "unrecorded" });
  assertEquals(layerMisfit({ idmap: ROOT_ONLY }, ROOTLESS), undefined);
  // ... unless its warnings say owners were lost (an older strata said it only there).
  const warned = { idmap: ROOT_ONLY, warnings: ["layer x: cannot set owners (first: 1000:1000)"] };
  assertEquals(layerMisfit(warned, ROOTLESS), { reason: "ownersLost" });
  assertEquals(layerMisfit(warned, ROOT_ONLY), undefined);
});

Deno.test("describeMisfit: names the id, the host id, what this mapping shows and both mappings", () => {
  const shifted = describeMisfit(
    { reason: "id", kind: "uid", id: 0, host: 100000, seenAs: 100000 },
    SHIFTED,
    FULL,
  );
  for (
    const s of [
      "uid 0",
      "host uid 100000",
      "shows as uid 100000",
      "0 100000 65536",
      "0 0 4294967295",
    ]
  ) {
    assert(shifted.includes(s), `${s} in ${shifted}`);
  }
  const unmapped = describeMisfit(
    { reason: "id", kind: "gid", id: 70000, host: 70000 },
    FULL,
    BELOW_64K,
  );
  for (const s of ["gid 70000", "host gid 70000", "gid map [0 0 65536]", "does not map"]) {
    assert(unmapped.includes(s), `${s} in ${unmapped}`);
  }
  assert(describeMisfit({ reason: "unrecorded" }, FULL, BELOW_64K).includes("strata verify"));
});

Deno.test("idMapKey and sameIdMap: a mapping's own copies are named by the whole mapping", () => {
  const keys = [FULL, BELOW_64K, ROOTLESS, ROOT_ONLY, SHIFTED, map(ROOTLESS.uid, ROOT_ONLY.gid)]
    .map(idMapKey);
  assertEquals(new Set(keys).size, keys.length);
  for (const k of keys) assert(/^[0-9a-f]{16}$/.test(k), k);
  assertEquals(idMapKey(map([[0, 0, 65536]])), idMapKey(BELOW_64K));
  assert(sameIdMap(map([[0, 0, 65536]]), BELOW_64K));
  assert(!sameIdMap(ROOTLESS, map(ROOTLESS.uid, ROOT_ONLY.gid)));
  assertNotEquals(idMapKey(ROOTLESS), idMapKey(map(ROOTLESS.uid, ROOT_ONLY.gid)));
  assert(isTreeIds({ uid: [[0, 1]], gid: [] }));
  assert(!isTreeIds({ uid: [[0, 0]], gid: [] }));
  assert(!isTreeIds({ uid: [[-1, 1]], gid: [] }));
});

Deno.test({
  name:
    "record: layer.json lists every inode's owner: implied parents, whiteouts, the root, file capabilities",
  ignore: !isRoot,
  async fn() {
    await using tmp = await tempDir();
    const cache = join(String(tmp), "cache");
    const base = new TarWriter({ defaultMtime: 1_700_000_000 })
      .directory("./", { mode: 0o755, uid: 0, gid: 0 })
      .directory("srv/", { mode: 0o2775, uid: 4000, gid: 4001 })
      .directory("gone/", { mode: 0o755, uid: 5000, gid: 5001 })
      .file("gone/x", "x", { uid: 5000, gid: 5001 });
    // The upper layer names no parent of srv/app/data (srv/ is implied: it
    // takes the lower's 4000:4001) and whites out gone/.
    const upper = new TarWriter({ defaultMtime: 1_700_000_000 })
      .file("srv/app/data", "d", { mode: 0o4750, uid: 1000, gid: 1001 })
      .file(".wh.gone", "")
      .file("bin/ping", "p", {
        mode: 0o755,
        uid: 0,
        gid: 0,
        xattrs: { "security.capability": CAP_NET_RAW },
      });
    const layers = [memoryLayer(base), memoryLayer(upper)];
    const r = await CachingLayerResolver.create(cache);
    const lowers = await r.resolveAll(layers);
    const rec: LayerRecord = await r.record(layers[1].diffID, [layers[0]]);
    assert(rec.dependsOnLowers, "srv/ came from the lower");
    // ./ (made by the applier: 0), srv (4000, from the lower), srv/app
    // (implied, no lower: root), the file (1000), the whiteout, bin.
    assertEquals(rec.ids, { uid: idSpans([0, 1000, 4000]), gid: idSpans([0, 1001, 4001]) });
    assertEquals(rec.ownersLost, false);
    assertEquals(rec.idmap, (await r.record(layers[0].diffID)).idmap);
    // The same as a walk of the published tree finds.
    assertEquals((await treeRecord(lowers[1])).ids, rec.ids);
    assertEquals((await r.record(layers[0].diffID)).ids, {
      uid: idSpans([0, 4000, 5000]),
      gid: idSpans([0, 4001, 5001]),
    });
    // A file capability counts as uid 0 even when no file is root's.
    const capOnly = new TarWriter({ defaultMtime: 1 })
      .directory("./", { uid: 7, gid: 7 })
      .file("ping", "p", {
        uid: 7,
        gid: 7,
        xattrs: { "security.capability": CAP_NET_RAW },
      });
    const cap = memoryLayer(capOnly);
    await r.resolve(cap);
    assertEquals((await r.record(cap.diffID)).ids, { uid: [[0, 1], [7, 1]], gid: [[7, 1]] });
  },
});
