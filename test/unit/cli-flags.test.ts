import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { UsageError, formatDuration, parseBindAddress, parseDuration, parseFlags, parseZapLevel } from '../../cli/flags.js';
import { main } from '../../cli/main.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

// `edge` takes flags as every Kubernetes operator does (Go's flag package, controller-runtime):
// a bad command line prints the command's usage and exits 2, never a stack trace.

const USAGE = 'usage: test [--leader-elect] [--lease-duration D]\n';
const config = (args: string[]) => ({
  args,
  options: {
    'leader-elect': { type: 'boolean' as const, default: true },
    'lease-duration': { type: 'string' as const },
    verbose: { type: 'boolean' as const, short: 'v' },
  },
});

describe('parseFlags', () => {
  it('takes Go\'s spellings: -flag, --flag=value, --bool=false, --bool=true', () => {
    expect(parseFlags(USAGE, config(['-lease-duration', '15s'])).values['lease-duration']).toBe('15s');
    expect(parseFlags(USAGE, config(['-lease-duration=15s'])).values['lease-duration']).toBe('15s');
    expect(parseFlags(USAGE, config(['--lease-duration=15s'])).values['lease-duration']).toBe('15s');
    expect(parseFlags(USAGE, config([])).values['leader-elect']).toBe(true);
    expect(parseFlags(USAGE, config(['--leader-elect=false'])).values['leader-elect']).toBe(false);
    expect(parseFlags(USAGE, config(['-leader-elect=false'])).values['leader-elect']).toBe(false);
    expect(parseFlags(USAGE, config(['--leader-elect=true'])).values['leader-elect']).toBe(true);
    expect(parseFlags(USAGE, config(['--leader-elect'])).values['leader-elect']).toBe(true);
    expect(parseFlags(USAGE, config(['-v'])).values.verbose).toBe(true);
  });

  it('refuses an unknown flag, a value on a boolean that is not one, a missing value: UsageError with the usage', () => {
    for (const args of [['--bogus'], ['-bogus'], ['--leader-elect=maybe'], ['--lease-duration']]) {
      let err: unknown;
      try { parseFlags(USAGE, config(args)); } catch (e) { err = e; }
      expect(err, args.join(' ')).toBeInstanceOf(UsageError);
      expect((err as UsageError).usage).toBe(USAGE);
      expect((err as UsageError).message).not.toMatch(/To specify a positional/);
    }
  });
});

describe('Go durations, zap levels, bind addresses', () => {
  it('parses durations as time.ParseDuration does', () => {
    expect(parseDuration('--d', '15s')).toBe(15_000);
    expect(parseDuration('--d', '500ms')).toBe(500);
    expect(parseDuration('--d', '1m30s')).toBe(90_000);
    expect(parseDuration('--d', '1.5h')).toBe(5_400_000);
    expect(parseDuration('--d', '2h45m')).toBe(9_900_000);
    expect(parseDuration('--d', '0')).toBe(0);
    expect(parseDuration('--d', '100us')).toBeCloseTo(0.1);
    for (const bad of ['15', '15 s', 's', '1x', '', '-', '1s2']) expect(() => parseDuration('--d', bad), bad).toThrow(UsageError);
    expect(formatDuration(15_000)).toBe('15s');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(250)).toBe('250ms');
  });

  it('maps zap levels onto the logger\'s', () => {
    expect(parseZapLevel('--l', 'debug')).toBe('debug');
    expect(parseZapLevel('--l', 'INFO')).toBe('info');
    expect(parseZapLevel('--l', 'error')).toBe('error');
    expect(parseZapLevel('--l', 'panic')).toBe('error');
    expect(parseZapLevel('--l', '2')).toBe('debug');
    expect(parseZapLevel('--l', '0')).toBe('info');
    expect(() => parseZapLevel('--l', 'loud')).toThrow(UsageError);
  });

  it('reads bind addresses as controller-runtime does: HOST:PORT, :PORT for every interface, 0 for off', () => {
    expect(parseBindAddress('--a', '127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseBindAddress('--a', ':8081')).toEqual({ host: '0.0.0.0', port: 8081 });
    expect(parseBindAddress('--a', '[::1]:9000')).toEqual({ host: '::1', port: 9000 });
    expect(parseBindAddress('--a', '0')).toBeUndefined();
    for (const bad of ['8080', 'host', ':99999']) expect(() => parseBindAddress('--a', bad), bad).toThrow(UsageError);
  });
});

describe('edge SUBCOMMAND with a bad flag', () => {
  let err = '';
  afterEach(() => { vi.restoreAllMocks(); err = ''; });
  const capture = () => {
    vi.spyOn(process.stderr, 'write').mockImplementation((s) => { err += String(s); return true; });
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  };

  it.each([
    ['operator', ['--bogus'], /Unknown option '--bogus'[\s\S]*usage: edge operator/],
    ['operator', ['--nats', 'x', '--sealing-key-file', 'k', '--sync-period', '5'], /--sync-period: invalid duration "5"[\s\S]*usage: edge operator/],
    ['operator', ['--nats', 'x', '--sealing-key-file', 'k', '--zap-log-level', 'loud'], /invalid level "loud"/],
    ['operator', ['--nats', 'x', '--sealing-key-file', 'k', '--leader-elect-lease-duration', '15s', '--lease-duration-ms', '15000'], /not both/],
    ['operator', ['--nats', 'x', '--sealing-key-file', 'k', '--metrics-bind-address', 'nowhere'], /--metrics-bind-address must be HOST:PORT/],
    ['agent', ['--bogus'], /Unknown option '--bogus'[\s\S]*usage: edge agent/],
    ['agent', ['--workers', '/tmp', '--listen', 'nohost'], /--listen must be HOST:PORT[\s\S]*usage: edge agent/],
    ['dev', ['--bogus'], /usage: edge dev/],
    ['deploy', ['--bogus'], /usage: edge deploy/],
    ['secret', ['--bogus'], /usage: edge secret/],
    ['status', ['--bogus'], /usage: edge status/],
    ['logs', ['--bogus'], /usage: edge logs/],
  ])('edge %s %j: usage, exit 2', async (command, args, says) => {
    capture();
    expect(await main([command, ...args])).toBe(2);
    expect(err).toMatch(says);
    expect(err).not.toMatch(/^\s+at /m);
  });

  it('the edge binary: usage on stderr, exit 2, no stack trace', () => {
    const r = spawnSync(process.execPath, ['--no-node-snapshot', join(REPO_ROOT, 'bin/edge.mjs'), 'operator', '--bogus'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^edge operator: Unknown option '--bogus'\n\nusage: edge operator/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});
