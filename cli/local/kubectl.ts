import { spawn } from 'node:child_process';
import { EdgeError } from '../../common/errors.js';
import { isTransientApiError, retryTransient } from './retry.js';

export interface KubectlResult { code: number; stdout: string; stderr: string }

/** A kubectl run the apiserver refused for now (retryTransient's signal to run it again). */
class TransientKubectlError extends EdgeError { constructor(readonly result: KubectlResult) { super(result.stderr); } }

/**
 * Runs the machine's kubectl against a kubeconfig; never throws on a non-zero exit. A run
 * the apiserver refused with a transient 429 (just started: "storage is (re)initializing")
 * is run again after a pause, for up to 30 s.
 */
export async function kubectl(kubeconfigPath: string, args: string[], stdin?: string): Promise<KubectlResult> {
  try {
    return await retryTransient(async () => {
      const r = await kubectlOnce(kubeconfigPath, args, stdin);
      if (r.code !== 0 && isTransientApiError(r.stderr)) throw new TransientKubectlError(r);
      return r;
    });
  } catch (err) {
    if (err instanceof TransientKubectlError) return err.result;
    throw err;
  }
}

function kubectlOnce(kubeconfigPath: string, args: string[], stdin?: string): Promise<KubectlResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn('kubectl', ['--kubeconfig', kubeconfigPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}
