import { describe, expect, it, vi } from "vitest";
import { CursorPager, type Page } from "./paging";

type Row = { id: string };
const rows = (...ids: string[]): Row[] => ids.map((id) => ({ id }));

describe("CursorPager", () => {
  it("follows next_cursor until it is null", async () => {
    const pages: Record<string, Page<Row>> = {
      start: { items: rows("a", "b"), next_cursor: "c1" },
      c1: { items: rows("c"), next_cursor: null },
    };
    const fetchPage = vi.fn(async (cursor: string | null) => pages[cursor ?? "start"]!);
    const pager = new CursorPager(fetchPage, (r) => r.id);
    await pager.more();
    expect(pager.done).toBe(false);
    expect((await pager.more()).map((r) => r.id)).toEqual(["a", "b", "c"]);
    expect(pager.done).toBe(true);
    await pager.more();
    expect(fetchPage.mock.calls.map((c) => c[0])).toEqual([null, "c1"]);
  });

  it("shares one request between concurrent calls", async () => {
    const fetchPage = vi.fn(async () => ({ items: rows("a"), next_cursor: "x" }));
    const pager = new CursorPager(fetchPage, (r) => r.id);
    await Promise.all([pager.more(), pager.more()]);
    expect(fetchPage).toHaveBeenCalledTimes(1);
  });

  it("keeps a row that reappears on a later page once", async () => {
    const fetchPage = vi
      .fn()
      .mockResolvedValueOnce({ items: rows("a", "b"), next_cursor: "n" })
      .mockResolvedValueOnce({ items: rows("b", "c"), next_cursor: null });
    const pager = new CursorPager<Row>(fetchPage, (r) => r.id);
    await pager.more();
    expect((await pager.more()).map((r) => r.id)).toEqual(["a", "b", "c"]);
  });

  it("drops a page that arrives after a reset", async () => {
    let resolveOld!: (p: Page<Row>) => void;
    const fetchPage = vi
      .fn()
      .mockImplementationOnce(() => new Promise<Page<Row>>((r) => (resolveOld = r)))
      .mockResolvedValueOnce({ items: rows("new"), next_cursor: null });
    const pager = new CursorPager<Row>(fetchPage, (r) => r.id);
    const old = pager.more();
    pager.reset();
    await pager.more();
    resolveOld({ items: rows("old"), next_cursor: "z" });
    await old;
    expect(pager.items.map((r) => r.id)).toEqual(["new"]);
    expect(pager.done).toBe(true);
  });

  it("puts live inserts first and replaces updated rows in place", async () => {
    const pager = new CursorPager<Row & { v?: number }>(
      async () => ({ items: [{ id: "a" }, { id: "b" }], next_cursor: null }),
      (r) => r.id,
    );
    await pager.more();
    pager.upsert({ id: "c" });
    pager.upsert({ id: "b", v: 2 });
    pager.remove("a");
    expect(pager.items).toEqual([{ id: "c" }, { id: "b", v: 2 }]);
  });
});
