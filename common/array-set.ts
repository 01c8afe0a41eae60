// A set kept in an array, for the small sets that gain and lose a member on every request
// (what is in flight). V8 rebuilds a long-lived Set's or Map's hash table, in old space,
// whenever one empties or fills up with deleted entries, so add/delete per request on one
// made old-space garbage that only a full GC collects (docs/agent.md, "Old-space garbage
// per request"). An array that grows and shrinks by one allocates nothing. delete() and
// has() search linearly: for sets of a handful of members.
export class ArraySet<T> implements Iterable<T> {
  private readonly items: T[] = [];

  get size(): number { return this.items.length; }

  add(v: T): this {
    if (!this.items.includes(v)) this.items.push(v);
    return this;
  }

  has(v: T): boolean { return this.items.includes(v); }

  delete(v: T): boolean {
    const i = this.items.indexOf(v);
    if (i < 0) return false;
    const last = this.items.pop()!;
    if (i < this.items.length) this.items[i] = last;
    return true;
  }

  clear(): void { this.items.length = 0; }

  /** Over the members at the time of the call: a member may delete itself meanwhile, as with a Set. */
  [Symbol.iterator](): Iterator<T> { return [...this.items][Symbol.iterator](); }
}
