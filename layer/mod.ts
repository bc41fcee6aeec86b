/**
 * Layers: applying OCI layer tarballs to directories, safely and exactly
 * (`applicator.ts`), the path policy (`path.ts`), and tree records for
 * verifying cached layers (`record.ts`). The tar parser and writer live in
 * `tar.ts` and `tar_writer.ts`.
 *
 * @module
 */
export {
  ApplyError,
  applyLayer,
  type ApplyOptions,
  type ApplyResult,
  ApplyWorkers,
  DamagedLayerError,
  DeviceNotPermittedError,
  EntryWriteError,
  HardlinkTargetError,
  TarApplicator,
  type TarballApplicator,
  WhiteoutError,
  type WhiteoutMode,
} from "./applicator.ts";
export { confine } from "./path.ts";
export {
  type FileDigest,
  type IdSpan,
  idSpans,
  type TreeIds,
  type TreeRecord,
  treeRecord,
  type TreeRecordOptions,
} from "./record.ts";
export {
  readTar,
  type TarEntry,
  type TarEntryType,
  TarFormatError,
  type TarHeader,
  TarParser,
  type TarParserOptions,
  type TarSink,
  type TarSparseSegment,
  untar,
} from "./tar.ts";
/** The layer model `applyLayer` takes, and its digest type (from `image/types.ts`). */
export type { Digest, Layer } from "../image/types.ts";
