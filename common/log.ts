// Structured JSON logs, one object per line on stderr. Fields name the worker, actor or
// region a line is about, so logs can be filtered without parsing messages.
//
// An Error given as a field (`log.warn('x failed', { error: err })`) is written as its
// message under that key, as before, so `jq .error` and greps keep working, and beside it
// `<key>Class` (its name: for an EdgeError, the class), `<key>Causes` (the cause chain,
// outermost first, each `{ class, message }`) and `<key>Stack`. An EdgeError's context
// (worker, actor, region) fills the line's fields of those names that the call left unset.

import { types } from 'node:util';
import { EdgeError } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

function envLevel(): LogLevel {
  const v = process.env.EDGE_LOG_LEVEL;
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : 'info';
}

export type LogSink = (line: string) => void;

export function createLogger(base: LogFields = {}, sink: LogSink = (l) => process.stderr.write(l), level: LogLevel = envLevel()): Logger {
  const min = ORDER[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[lvl] < min) return;
    const rec: LogFields = { ts: new Date().toISOString(), level: lvl, msg, ...base, ...fields };
    for (const [k, v] of Object.entries(rec)) if (isError(v)) writeError(rec, k, v);
    sink(`${stringify(rec)}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, sink, level),
  };
}

// Errors from another realm (a vm context) fail instanceof Error.
const isError = (v: unknown): v is Error => v instanceof Error || types.isNativeError(v);

/**
 * A thrown value need not be an Error, nor serializable (a BigInt, a cycle): logging it
 * must not throw in the catch block that logs it, so such a field is written as a string.
 */
function stringify(rec: LogFields): string {
  try {
    return JSON.stringify(rec);
  } catch {
    return JSON.stringify(Object.fromEntries(Object.entries(rec).map(([k, v]) => {
      try { JSON.stringify(v); return [k, v]; } catch { return [k, toText(v)]; }
    })));
  }
}

// String() throws too, for an object without a prototype.
function toText(v: unknown): string {
  try { return String(v); } catch { return Object.prototype.toString.call(v); }
}

/** Deep enough for any chain we build; a cycle (a.cause = b, b.cause = a) ends it too. */
const MAX_CAUSES = 8;

function writeError(rec: LogFields, key: string, err: Error): void {
  rec[key] = err.message;
  rec[`${key}Class`] = err.name;
  const causes: { class: string; message: string }[] = [];
  const seen = new Set<unknown>([err]);
  for (let c: unknown = err.cause; c !== undefined && !seen.has(c) && causes.length < MAX_CAUSES; c = isError(c) ? c.cause : undefined) {
    seen.add(c);
    causes.push(isError(c) ? { class: c.name, message: c.message } : { class: typeof c, message: String(c) });
  }
  if (causes.length > 0) rec[`${key}Causes`] = causes;
  if (err.stack) rec[`${key}Stack`] = err.stack;
  if (err instanceof EdgeError && err.context) {
    for (const [k, v] of Object.entries(err.context)) if (v !== undefined && rec[k] === undefined) rec[k] = v;
  }
}

/** One line for an error: for HTTP bodies, status conditions and messages that wrap it. */
export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));
