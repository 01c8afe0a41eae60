import { parseArgs, type ParseArgsConfig } from 'node:util';
import { EdgeError } from '../common/errors.js';
import type { LogLevel } from '../common/log.js';

// Command lines the way Kubernetes operators take them (Go's flag package, as kubebuilder's
// main.go and controller-runtime use it): `--flag value`, `--flag=value`, `-flag value`,
// `--bool=false`; durations as Go writes them (`15s`, `1m30s`, `500ms`); zap's log levels.
// A command line that cannot run is a UsageError: `edge` prints it with the command's
// usage and exits 2, as Go's flag.ExitOnError does, never with a stack trace.

/** A command line that cannot run; main() prints `edge CMD: message`, the usage, and exits 2. */
export class UsageError extends EdgeError {
  constructor(message: string, readonly usage?: string) { super(message); }
}

type Parsed<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>>;

/**
 * parseArgs (strict: an unknown flag is an error) with Go's spellings accepted: `-name`
 * for `--name` when `name` is a long option, and `--bool=true|false` for a boolean.
 * Any error is a UsageError carrying `usage`.
 */
export function parseFlags<T extends ParseArgsConfig>(usage: string, config: T): Parsed<T> {
  const options = config.options ?? {};
  const args: string[] = [];
  const negated: string[] = [];
  const input = config.args ?? [];
  for (let i = 0; i < input.length; i++) {
    let a = input[i]!;
    if (a === '--') { args.push(...input.slice(i)); break; }
    const single = /^-([a-z][a-z0-9-]+)(=.*)?$/.exec(a);
    if (single && options[single[1]!]) a = `-${a}`;
    const withValue = /^--([a-z][a-z0-9-]*)=(.*)$/.exec(a);
    const opt = withValue ? options[withValue[1]!] : undefined;
    if (withValue && opt?.type === 'boolean') {
      const v = withValue[2]!.toLowerCase();
      if (v === 'true' || v === '1' || v === 't') a = `--${withValue[1]}`;
      else if (v === 'false' || v === '0' || v === 'f') { negated.push(withValue[1]!); continue; } else throw new UsageError(`invalid boolean value "${withValue[2]}" for --${withValue[1]}`, usage);
    }
    args.push(a);
  }
  let parsed: Parsed<T>;
  try {
    parsed = parseArgs({ ...config, args }) as Parsed<T>;
  } catch (err) {
    // node:util's messages name the flag ("Unknown option '--x'"); its hint about '--' is noise here.
    throw new UsageError(String((err as Error).message).replace(/\. To specify a positional argument starting with a '-'.*$/s, ''), usage);
  }
  for (const name of negated) (parsed.values as Record<string, unknown>)[name] = false;
  return parsed;
}

const DURATION_UNITS_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A Go duration (time.ParseDuration: `300ms`, `1.5h`, `2h45m`, `0`) in milliseconds.
 * Throws a UsageError naming the flag.
 */
export function parseDuration(flag: string, value: string, usage?: string): number {
  const bad = () => new UsageError(`${flag}: invalid duration "${value}" (a Go duration: 500ms, 15s, 1m30s, 2h)`, usage);
  if (value === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    total += Number(m[1]) * DURATION_UNITS_MS[m[2]!]!;
    at = re.lastIndex;
  }
  if (at === 0 || at !== value.length) throw bad();
  return total;
}

/** Milliseconds as a Go duration for usage text and logs (`15s`, `1m30s`, `250ms`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000 || ms % 1000 !== 0) return `${ms}ms`;
  let s = ms / 1000;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
}

/**
 * zap's --zap-log-level (controller-runtime's pkg/log/zap): debug, info, warn, error,
 * dpanic, panic, fatal, or a verbosity N > 0 (debug). The logger has four levels, so
 * everything past error is error.
 */
export function parseZapLevel(flag: string, value: string, usage?: string): LogLevel {
  const v = value.toLowerCase();
  if (v === 'debug' || v === 'info' || v === 'warn' || v === 'error') return v;
  if (v === 'dpanic' || v === 'panic' || v === 'fatal') return 'error';
  if (/^\d+$/.test(v)) return Number(v) > 0 ? 'debug' : 'info';
  throw new UsageError(`${flag}: invalid level "${value}" (debug, info, warn, error, or a verbosity N > 0)`, usage);
}

/**
 * A bind address as controller-runtime takes it: `HOST:PORT`, `:PORT` (every interface),
 * or `0` (off: undefined).
 */
export function parseBindAddress(flag: string, value: string, usage?: string): { host: string; port: number } | undefined {
  if (value === '0') return undefined;
  const m = /^(.*):(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65_535) throw new UsageError(`${flag} must be HOST:PORT, :PORT or 0 (off), got "${value}"`, usage);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  return { host: host === '' ? '0.0.0.0' : host, port };
}
