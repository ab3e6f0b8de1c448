// Walks a cursor-paginated list (`{items, next_cursor}`) one page at a time.
// Concurrent `more()` calls share one request, items already held are not
// repeated (a row that moved between pages is kept once), and a `reset()`
// while a page is in flight discards that page.

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export type PageFetcher<T> = (cursor: string | null) => Promise<Page<T>>;

export class CursorPager<T> {
  items: T[] = [];
  private cursor: string | null = null;
  private finished = false;
  private pending: Promise<T[]> | null = null;
  private generation = 0;
  private seen = new Set<string>();

  constructor(
    private readonly fetchPage: PageFetcher<T>,
    private readonly key: (item: T) => string,
  ) {}

  /** No further page exists. */
  get done(): boolean {
    return this.finished;
  }

  get loading(): boolean {
    return this.pending !== null;
  }

  /** Fetch the next page; resolves to every item held so far. */
  more(): Promise<T[]> {
    if (this.finished) return Promise.resolve(this.items);
    if (this.pending) return this.pending;
    const generation = this.generation;
    this.pending = this.fetchPage(this.cursor)
      .then((page) => {
        if (generation !== this.generation) return this.items;
        for (const item of page.items) {
          const k = this.key(item);
          if (this.seen.has(k)) continue;
          this.seen.add(k);
          this.items.push(item);
        }
        this.cursor = page.next_cursor ?? null;
        this.finished = this.cursor === null;
        return this.items;
      })
      .finally(() => {
        if (generation === this.generation) this.pending = null;
      });
    return this.pending;
  }

  /** Start over from the first page (new filter or sort). */
  reset(): void {
    this.generation += 1;
    this.items = [];
    this.cursor = null;
    this.finished = false;
    this.pending = null;
    this.seen.clear();
  }

  /** Put `item` first (a live insert), or replace the held item with its key. */
  upsert(item: T, atStart = true): void {
    const k = this.key(item);
    const at = this.items.findIndex((i) => this.key(i) === k);
    if (at >= 0) this.items[at] = item;
    else {
      this.seen.add(k);
      if (atStart) this.items.unshift(item);
      else this.items.push(item);
    }
    this.items = [...this.items];
  }

  remove(k: string): void {
    this.items = this.items.filter((i) => this.key(i) !== k);
  }
}
