import { describe, expect, it } from 'vitest';
import { chargedNs, CpuLedger } from '../../node-agent/isolate/cpu-ledger.js';

const ms = (n: number) => BigInt(n) * 1_000_000n;

describe('the CPU ledger', () => {
  it('sums every isolate\'s time and the main thread\'s since their last looks', () => {
    let main = 100;
    const ledger = new CpuLedger(() => main);
    const a = { cpuNs: ms(10) };
    const b = { cpuNs: ms(0) };
    ledger.observe(a, ms(30));
    ledger.observe(b, ms(5));
    main = 104;
    ledger.observeMain();
    expect(ledger.totalNs).toBe(ms(20 + 5 + 4));
    expect(a.cpuNs).toBe(ms(30));
    // A finished slice's wall-time reading is replaced by its CPU time: the total falls with it.
    ledger.observe(a, ms(26));
    expect(ledger.totalNs).toBe(ms(25));
  });
});

describe('what a request is charged', () => {
  it('is the process\'s CPU in proportion to its isolate\'s part of the time seen', () => {
    // Four isolates on one core, each seen 80 ms while the process spent 80 ms: 20 ms each.
    expect(chargedNs(ms(80), ms(80), ms(320))).toBe(ms(20));
    // Alone, or with nothing else seen, it is charged all of it.
    expect(chargedNs(ms(60), ms(60), ms(60))).toBe(ms(60));
    expect(chargedNs(ms(60), ms(0), ms(0))).toBe(ms(60));
  });

  it('is never more than the process spent, nor less than nothing', () => {
    // Others' readings fell (their slices ended): its part is capped at the whole.
    expect(chargedNs(ms(50), ms(70), ms(40))).toBe(ms(50));
    expect(chargedNs(ms(50), ms(70), ms(-10))).toBe(ms(50));
    expect(chargedNs(ms(50), ms(-5), ms(40))).toBe(0n);
  });
});
