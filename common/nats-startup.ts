import { ErrorCode, NatsError, type ConnectionOptions, type NatsConnection } from 'nats';
import { EdgeError } from './errors.js';
import { errorMessage, type Logger } from './log.js';
import { connectNats } from './nats.js';

// Start-up while NATS is away (issue 13, item 6): an agent or operator whose NATS is not
// there yet, or goes away during start-up, waits for it with backoff instead of exiting
// with an unhandled NatsError, logs each failure, and says why it is not ready in /readyz
// (the `Startup` the admin port reads). Wrong credentials are not a wait: they fail.

/** What start-up waits for, for /readyz. */
export class Startup {
  private why: string | undefined = 'starting';

  /** The 503 body of /readyz while start-up waits, or undefined once it no longer does. */
  get waiting(): string | undefined { return this.why; }

  wait(why: string): void { this.why = why; }
  done(): void { this.why = undefined; }
}

/** start-up was stopped (SIGTERM, stop()) while it waited for NATS. */
export class NatsStartupStoppedError extends EdgeError {}

export interface NatsRetryOptions {
  log: Logger;
  startup?: Startup;
  /** First retry delay (default 250 ms), doubling up to maxMs (default 5 s). */
  initialMs?: number;
  maxMs?: number;
  /** Ends the wait with NatsStartupStoppedError. */
  stopped?: () => boolean;
}

/** Errors that waiting does not cure: credentials and permissions. */
function permanent(err: unknown): boolean {
  if (!(err instanceof NatsError)) return false;
  return err.code === ErrorCode.AuthorizationViolation || err.code === ErrorCode.PermissionsViolation || err.code === ErrorCode.BadAuthentication
    || err.code === ErrorCode.AuthenticationExpired || err.code === ErrorCode.AuthenticationTimeout;
}

/**
 * Runs `step` (a start-up step that needs NATS) until it succeeds, waiting with backoff
 * after each failure; permanent failures (credentials) are thrown at once.
 */
export async function untilNats<T>(what: string, step: () => Promise<T>, opts: NatsRetryOptions): Promise<T> {
  let delay = opts.initialMs ?? 250;
  const maxMs = opts.maxMs ?? 5_000;
  for (let attempt = 1; ; attempt++) {
    if (opts.stopped?.()) throw new NatsStartupStoppedError(`start-up stopped while ${what}`);
    try {
      const out = await step();
      if (attempt > 1) opts.log.info('NATS reached; start-up goes on', { step: what, attempts: attempt });
      return out;
    } catch (err) {
      if (permanent(err) || err instanceof NatsStartupStoppedError) throw err;
      const why = `waiting for NATS: ${what}: ${errorMessage(err)}`;
      opts.startup?.wait(why);
      opts.log.warn('NATS not reachable during start-up; retrying', { step: what, attempt, retryInMs: delay, error: err });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, maxMs);
    }
  }
}

/** connectNats, waited for: the first connection is retried like any later reconnect. */
export function connectNatsWaiting(url: string, name: string, extra: Partial<ConnectionOptions>, opts: NatsRetryOptions): Promise<NatsConnection> {
  return untilNats(`connecting to ${url}`, () => connectNats(url, name, extra), opts);
}
