// hashring 3.x ships no types; the part of its API the actor ring uses.
declare module 'hashring' {
  type Servers = string | string[] | Record<string, { vnodes?: number; weight?: number }>;
  class HashRing {
    constructor(servers?: Servers, algorithm?: string, options?: { 'vnode count'?: number; replicas?: number; 'max cache size'?: number; compatibility?: string });
    get(key: string): string;
    range(key: string, size?: number, unique?: boolean): string[];
    add(servers: Servers): this;
    remove(server: string): this;
    has(server: string): boolean;
    reset(): void;
  }
  export default HashRing;
}
