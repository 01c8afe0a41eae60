// Linux CPU lists ("0", "1,3", "0-2,5"), as taskset and /proc/<pid>/status write them. The
// agent front reads its own to place its isolate hosts (node-agent/hosts/cpu-affinity.ts);
// the bench reads them to pin and account (bench/cpu.ts).

/** The Cpus_allowed_list of a /proc/<pid>/status (e.g. "1" or "0-1"); undefined when absent. */
export function parseCpusAllowed(status: string): string | undefined {
  return /^Cpus_allowed_list:\s*(\S+)\s*$/m.exec(status)?.[1];
}

/** The CPU numbers of a CPU list ("0", "1,3", "0-2,5"). */
export function expandCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (a === undefined || !Number.isInteger(a) || (b !== undefined && (!Number.isInteger(b) || b < a))) throw new Error(`not a CPU list: ${JSON.stringify(list)}`);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}
