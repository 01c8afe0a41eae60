import { runLoad, type LoadSpec } from './load.js';

// The load generator as a process of its own, so that it can be pinned to a core apart from
// the server (bench/percore.ts; autocannon otherwise runs inside the bench process). Reads
// {spec, warmupS} from argv[2], runs the warm-up, prints BENCH_LOAD_START, runs the measured
// load and prints BENCH_LOAD_RESULT with the result and its own CPU seconds in that window.

const { spec, warmupS } = JSON.parse(process.argv[2] ?? '{}') as { spec: LoadSpec; warmupS: number };
if (warmupS > 0) await runLoad('autocannon', { ...spec, durationS: warmupS }, '');
process.stdout.write('BENCH_LOAD_START\n');
const cpu0 = process.cpuUsage();
const result = await runLoad('autocannon', spec, '');
const cpu = process.cpuUsage(cpu0);
process.stdout.write(`BENCH_LOAD_RESULT ${JSON.stringify({ ...result, loadgenCpuS: (cpu.user + cpu.system) / 1e6 })}\n`);
