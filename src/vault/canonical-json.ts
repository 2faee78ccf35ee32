import { ErrorCode, LetheError } from '../errors/index.ts';

/** A value that survives a JSON round trip unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
/** A JSON object. */
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * Serialises `value` exactly as `JSON.stringify` does (toJSON, dropped `undefined` and
 * function members, `null` for non-finite numbers and holes) except that every object's
 * keys are written in ascending UTF-16 code-unit order, at every depth, with no
 * whitespace. Two values that are equal as JSON therefore give the same string whatever
 * order their keys were built in, which is what makes the string fit to hash.
 *
 * Keys are sorted by hand rather than by rebuilding objects: JavaScript enumerates
 * integer-like keys ("9", "10") before all others whatever the insertion order.
 *
 * Throws INTERNAL (naming the path, e.g. `$.stats.rows`) for a bigint, a cycle, or a top
 * level value that JSON cannot represent (`undefined`, a function, a symbol).
 */
export function canonicalJson(value: unknown): string {
  const out = encode(value, '', '$', new Set());
  if (out === undefined) {
    throw new LetheError(
      ErrorCode.INTERNAL,
      `canonicalJson: the value at $ is ${typeof value}, which JSON cannot represent`,
    );
  }
  return out;
}

/** `JSON.parse(canonicalJson(value))`: the value as it will look after storage. */
export function toJsonValue(value: unknown): JsonValue {
  return JSON.parse(canonicalJson(value)) as JsonValue;
}

function encode(input: unknown, key: string, path: string, stack: Set<object>): string | undefined {
  let value = input;
  if (typeof value === 'object' && value !== null && 'toJSON' in value) {
    const toJSON = value.toJSON;
    if (typeof toJSON === 'function') value = (toJSON as (k: string) => unknown).call(value, key);
  }
  // Boxed primitives serialise as their primitive, as in JSON.stringify.
  if (value instanceof Number || value instanceof String || value instanceof Boolean) {
    value = value.valueOf();
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new LetheError(
        ErrorCode.INTERNAL,
        `canonicalJson: the value at ${path} is a bigint, which JSON cannot represent; convert it to a string or number`,
      );
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'object':
      if (value === null) return 'null';
      if (stack.has(value)) {
        throw new LetheError(ErrorCode.INTERNAL, `canonicalJson: the value at ${path} is circular`);
      }
      stack.add(value);
      try {
        return Array.isArray(value)
          ? encodeArray(value as unknown[], path, stack)
          : encodeObject(value as Record<string, unknown>, path, stack);
      } finally {
        stack.delete(value);
      }
  }
}

function encodeArray(items: readonly unknown[], path: string, stack: Set<object>): string {
  const parts: string[] = [];
  for (let i = 0; i < items.length; i++) {
    parts.push(encode(items[i], String(i), `${path}[${i}]`, stack) ?? 'null');
  }
  return `[${parts.join(',')}]`;
}

function encodeObject(obj: Record<string, unknown>, path: string, stack: Set<object>): string {
  const parts: string[] = [];
  // Default sort compares UTF-16 code units, as RFC 8785 (JCS) specifies.
  for (const key of Object.keys(obj).sort()) {
    const encoded = encode(obj[key], key, `${path}.${key}`, stack);
    if (encoded !== undefined) parts.push(`${JSON.stringify(key)}:${encoded}`);
  }
  return `{${parts.join(',')}}`;
}
