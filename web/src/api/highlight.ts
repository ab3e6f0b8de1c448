// Renders the search API's highlight snippets without injecting HTML: the
// server escapes everything and wraps matches in <mark>…</mark>; we split on
// exactly those two tags, decode the five entities it may produce, and hand
// React plain strings. Any other markup stays visible text.

export interface Fragment {
  text: string;
  mark: boolean;
}

const ENTITIES: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&#39;": "'",
  "&#x27;": "'",
  "&#x2F;": "/",
};

function decode(s: string): string {
  return s.replace(/&(?:amp|lt|gt|quot|#39|#x27|#x2F);/g, (e) => ENTITIES[e] ?? e);
}

export function fragments(snippet: string): Fragment[] {
  const out: Fragment[] = [];
  const re = /<mark>([\s\S]*?)<\/mark>/g;
  let last = 0;
  for (let m = re.exec(snippet); m; m = re.exec(snippet)) {
    if (m.index > last) out.push({ text: decode(snippet.slice(last, m.index)), mark: false });
    out.push({ text: decode(m[1] ?? ""), mark: true });
    last = m.index + m[0].length;
  }
  if (last < snippet.length) out.push({ text: decode(snippet.slice(last)), mark: false });
  return out;
}
