/**
 * A Map that keeps its `max` most recently used entries: caches keyed by
 * binary identity see every binary the node ever runs, so they need a bound.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, V>();
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }
}
