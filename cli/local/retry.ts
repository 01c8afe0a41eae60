// A kube-apiserver that has just started answers `429 storage is (re)initializing` while
// its watch caches fill (and for a CRD's objects until its storage is ready): transient by
// definition, so `edge dev` and the local cluster wait it out instead of dying on it.

const TRANSIENT = /\(re\)initializing|\b429\b|TooManyRequests|too many requests/i;

/** Whether an error (or kubectl's stderr) is the apiserver's "not yet, retry" answer. */
export function isTransientApiError(err: unknown): boolean {
  const e = err as { code?: unknown; status?: unknown; statusCode?: unknown; message?: unknown } | null;
  if (e && (e.code === 429 || e.status === 429 || e.statusCode === 429)) return true;
  return TRANSIENT.test(typeof err === 'string' ? err : e && typeof e.message === 'string' ? e.message : String(err));
}

export interface RetryOptions { totalMs?: number; firstDelayMs?: number; maxDelayMs?: number; onRetry?: (attempt: number, err: unknown) => void }

/** Runs `fn`, again after a growing pause while it fails with a transient apiserver error, for at most `totalMs` (default 30 s). */
export async function retryTransient<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.totalMs ?? 30_000);
  let delay = opts.firstDelayMs ?? 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransientApiError(err) || Date.now() + delay > deadline) throw err;
      opts.onRetry?.(attempt, err);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, opts.maxDelayMs ?? 2000);
    }
  }
}
