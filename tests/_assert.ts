/**
 * A small stand-in for `jsr:@std/assert`, which cannot be fetched here (JSR is
 * unreachable). It keeps std's names and argument order so that swapping the
 * import map entry back to `jsr:@std/assert` needs no change in the tests.
 *
 * @module
 */
import { AssertionError, deepStrictEqual, notDeepStrictEqual } from "node:assert/strict";

export { AssertionError };

/** Asserts that `actual` is deeply equal to `expected`. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** Asserts that `actual` is not deeply equal to `expected`. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  notDeepStrictEqual(actual, expected, msg);
}

/** Asserts that `actual` is strictly (`===`) equal to `expected`. */
export function assertStrictEquals<T>(
  actual: unknown,
  expected: T,
  msg?: string,
): asserts actual is T {
  if (!Object.is(actual, expected)) {
    throw new AssertionError({
      message: msg ?? `Values are not strictly equal: ${String(actual)} !== ${String(expected)}`,
    });
  }
}

/** Asserts that `expr` is truthy. */
export function assert(expr: unknown, msg = "Assertion failed"): asserts expr {
  if (!expr) throw new AssertionError({ message: msg });
}

/** Asserts that `actual` is not null or undefined. */
export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  if (actual === undefined || actual === null) {
    throw new AssertionError({ message: msg ?? `Expected a value, got ${actual}` });
  }
}

/** Asserts that `actual` contains `expected` (strings or arrays). */
export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (!actual.includes(expected)) {
    throw new AssertionError({
      message: msg ?? `Expected ${JSON.stringify(actual)} to include ${JSON.stringify(expected)}`,
    });
  }
}

/** Asserts that `actual` matches the regular expression `expected`. */
export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  if (!expected.test(actual)) {
    throw new AssertionError({
      message: msg ?? `Expected ${JSON.stringify(actual)} to match ${expected}`,
    });
  }
}

/** Asserts that `actual` is an array including every element of `expected`. */
export function assertArrayIncludes<T>(
  actual: ArrayLike<T>,
  expected: ArrayLike<T>,
  msg?: string,
): void {
  const have = Array.from(actual).map((v) => JSON.stringify(v));
  for (const v of Array.from(expected)) {
    if (!have.includes(JSON.stringify(v))) {
      throw new AssertionError({
        message: msg ?? `Expected array to include ${JSON.stringify(v)}`,
      });
    }
  }
}

/** Asserts that `actual` is an instance of `type`. */
// deno-lint-ignore no-explicit-any
export function assertInstanceOf<T extends abstract new (...args: any[]) => any>(
  actual: unknown,
  type: T,
  msg?: string,
): asserts actual is InstanceType<T> {
  if (!(actual instanceof type)) {
    throw new AssertionError({ message: msg ?? `Expected an instance of ${type.name}` });
  }
}

/** Fails the test unconditionally. */
export function fail(msg?: string): never {
  throw new AssertionError({ message: msg ?? "Failed assertion" });
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = new (...args: any[]) => E;

function checkError<E extends Error>(e: unknown, cls?: ErrorClass<E>, includes?: string): E {
  if (!(e instanceof Error)) {
    throw new AssertionError({ message: `A non-Error was thrown: ${String(e)}` });
  }
  if (cls && !(e instanceof cls)) {
    throw new AssertionError({
      message: `Expected error to be ${cls.name}, got ${e.constructor.name}: ${e.message}`,
    });
  }
  if (includes !== undefined && !e.message.includes(includes)) {
    throw new AssertionError({
      message: `Expected error message to include ${JSON.stringify(includes)}, got ${
        JSON.stringify(e.message)
      }`,
    });
  }
  return e as E;
}

/** Asserts that `fn` throws, optionally of class `cls` with a message including `includes`. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  cls?: ErrorClass<E>,
  includes?: string,
): E {
  try {
    fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new AssertionError({ message: "Expected function to throw." });
}

/** Asserts that the promise from `fn` rejects, optionally of class `cls` with a message including `includes`. */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  cls?: ErrorClass<E>,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    return checkError(e, cls, includes);
  }
  throw new AssertionError({ message: "Expected function to reject." });
}
