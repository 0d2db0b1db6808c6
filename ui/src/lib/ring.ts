// Fixed-size column rings for the charts. Every column is a Float64Array of twice the capacity
// and each value is written at `i` and `i + capacity`, so the newest `len` values are always
// one contiguous slice: a chart gets `subarray` views (no copying, no growth), and memory is
// allocated once, when the page opens.

export const MAX_POINTS = 3600;

export class ColumnRing {
  readonly capacity: number;
  readonly columns: Float64Array[];
  private head = 0; // next write position in [0, capacity)
  private len = 0;

  constructor(columnCount: number, capacity = MAX_POINTS) {
    this.capacity = capacity;
    this.columns = Array.from({ length: columnCount }, () => new Float64Array(capacity * 2));
  }

  get length(): number {
    return this.len;
  }

  push(row: ArrayLike<number>): void {
    const cap = this.capacity;
    const h = this.head;
    for (let c = 0; c < this.columns.length; c++) {
      const v = row[c] ?? 0;
      const col = this.columns[c];
      col[h] = v;
      col[h + cap] = v;
    }
    this.head = (h + 1) % cap;
    if (this.len < cap) this.len++;
  }

  clear(): void {
    this.head = 0;
    this.len = 0;
  }

  /** Offset (into the doubled column) of the oldest value. */
  private start(): number {
    return (this.head - this.len + this.capacity) % this.capacity;
  }

  /** The newest value of a column, or `undefined` when empty. */
  last(column: number): number | undefined {
    if (this.len === 0) return undefined;
    return this.columns[column][(this.head - 1 + this.capacity) % this.capacity];
  }

  /** Contiguous views of the newest `count` values of each column (oldest first). */
  tail(count: number): Float64Array[] {
    const n = Math.max(0, Math.min(count, this.len));
    const s = this.start() + (this.len - n);
    return this.columns.map((col) => col.subarray(s, s + n));
  }

  /** Views of the values whose column-0 key is `>= from` (column 0 must be ascending). */
  since(from: number): Float64Array[] {
    const all = this.tail(this.len);
    const keys = all[0];
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keys[mid] < from) lo = mid + 1;
      else hi = mid;
    }
    return all.map((col) => col.subarray(lo));
  }
}

/** A bounded list (newest last) for alerts and the like. */
export class BoundedList<T> {
  private items: T[] = [];
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  push(item: T): void {
    this.items.push(item);
    if (this.items.length > this.capacity) this.items.splice(0, this.items.length - this.capacity);
  }

  replace(items: T[]): void {
    this.items = items.slice(-this.capacity);
  }

  toArray(): T[] {
    return this.items.slice();
  }

  get length(): number {
    return this.items.length;
  }
}
