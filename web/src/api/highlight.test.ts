import { describe, expect, it } from "vitest";
import { fragments } from "./highlight";

describe("fragments", () => {
  it("splits on <mark> and decodes the escaped text around it", () => {
    expect(fragments("a &lt;b&gt; <mark>rust</mark> &amp; <mark>tokio</mark>!")).toEqual([
      { text: "a <b> ", mark: false },
      { text: "rust", mark: true },
      { text: " & ", mark: false },
      { text: "tokio", mark: true },
      { text: "!", mark: false },
    ]);
  });

  it("leaves markup that is not a mark as text", () => {
    expect(fragments("&lt;script&gt;x&lt;/script&gt;")).toEqual([{ text: "<script>x</script>", mark: false }]);
  });
});
