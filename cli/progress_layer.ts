/**
 * Counts bytes as layers are read, for the progress display: a wrapper
 * {@linkcode Layer} whose `compressed()` stream reports bytes fetched and
 * whose `uncompressed()` stream reports bytes applied. The store never knows
 * it is being watched; a layer that is already cached is never read, so it
 * shows as "cached".
 *
 * @module
 */
import type { Image, Layer } from "../image/types.ts";
import { openLayerTar } from "../image/blob.ts";
import type { LayerProgress } from "./output.ts";

function counter(report: (n: number) => void): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      report(chunk.byteLength);
      controller.enqueue(chunk);
    },
  });
}

/**
 * Wraps `layer` so that reading it reports to `progress`.
 *
 * @example Usage
 * ```ts ignore
 * import { withProgress } from "./progress_layer.ts";
 * const watched = withProgress(image.layers[0], out.layers(image.layers)[0]);
 * ```
 */
export function withProgress(layer: Layer, progress: LayerProgress): Layer {
  const watched: Layer = {
    digest: layer.digest,
    diffID: layer.diffID,
    mediaType: layer.mediaType,
    size: layer.size,
    async compressed(signal?: AbortSignal) {
      progress.start();
      const s = await layer.compressed(signal);
      return s.pipeThrough(counter((n) => progress.fetched(n)));
    },
    async uncompressed(signal?: AbortSignal) {
      // Through openLayerTar on the wrapper, so the blob read is counted too
      // and digests are verified exactly as for the inner layer.
      const s = await openLayerTar(watched, signal);
      return s.pipeThrough(counter((n) => progress.applied(n)));
    },
  };
  return watched;
}

/**
 * Returns `image` with every layer wrapped by {@linkcode withProgress}.
 *
 * @example Usage
 * ```ts ignore
 * import { imageWithProgress } from "./progress_layer.ts";
 * const watched = imageWithProgress(image, out.layers(image.layers));
 * ```
 */
export function imageWithProgress(image: Image, progress: LayerProgress[]): Image {
  return {
    digest: image.digest,
    manifest: image.manifest,
    configDigest: image.configDigest,
    config: image.config,
    name: image.name,
    layers: image.layers.map((l, i) => withProgress(l, progress[i])),
  };
}
