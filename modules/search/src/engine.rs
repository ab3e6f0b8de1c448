//! Running a search on the live generation: sorting, paging, counting,
//! typo fallback and highlights.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByStaticFastValue, SortByString};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::Query;
use tantivy::snippet::SnippetGenerator;
use tantivy::{Order, Searcher};

use crate::index::Generation;
use crate::query::{Filters, QueryBuilder, Typos, UserQuery};
use crate::schema::{prefix_analyzer, Fields};
use crate::SearchError;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    Relevance,
    CreatedAt,
    UpdatedAt,
    Title,
}

impl SortBy {
    /// Best first for relevance, newest first for dates, A→Z for titles.
    pub fn default_order(self) -> Direction {
        match self {
            SortBy::Title => Direction::Asc,
            _ => Direction::Desc,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Asc,
    Desc,
}

impl From<Direction> for Order {
    fn from(d: Direction) -> Order {
        match d {
            Direction::Asc => Order::Asc,
            Direction::Desc => Order::Desc,
        }
    }
}

/// One search over the index.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: UserQuery,
    pub filters: Filters,
    pub sort: SortBy,
    pub order: Direction,
    /// Results wanted (one more is fetched to know whether a page follows).
    pub limit: usize,
    pub offset: usize,
    /// `None` on a first page: decided by how much exact matching finds.
    pub typos: Option<Typos>,
}

/// A matching document.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct HitPage {
    /// Up to `limit` hits.
    pub hits: Vec<Hit>,
    /// More hits follow this page.
    pub more: bool,
    /// Matching documents in all.
    pub total: usize,
    /// The typo mode used; later pages keep it.
    pub typos: Typos,
}

/// Search `generation`. With `fuzzy_below > 0`, a first page whose exact
/// query matches fewer documents than that is searched again with typo
/// tolerance.
pub fn search(generation: &Generation, req: &SearchRequest, fuzzy_below: usize) -> Result<HitPage, SearchError> {
    let mut builder = query_builder(generation)?;
    let searcher = generation.reader.searcher();
    let first = req.typos.unwrap_or(Typos::Exact);
    let query = builder.build(&req.query, &req.filters, first);
    let page = run(&searcher, &*query, req, first)?;
    let retry = req.typos.is_none() && fuzzy_below > 0 && page.total < fuzzy_below && req.query.has_positive();
    if retry {
        let query = builder.build(&req.query, &req.filters, Typos::Tolerated);
        let fuzzy = run(&searcher, &*query, req, Typos::Tolerated)?;
        if fuzzy.total > page.total {
            return Ok(fuzzy);
        }
    }
    Ok(page)
}

pub fn query_builder(generation: &Generation) -> Result<QueryBuilder, SearchError> {
    Ok(QueryBuilder {
        fields: generation.fields,
        text: generation.index.tokenizer_for_field(generation.fields.title)?,
        prefix: prefix_analyzer(),
    })
}

fn run(searcher: &Searcher, query: &dyn Query, req: &SearchRequest, typos: Typos) -> Result<HitPage, SearchError> {
    let top = TopDocs::with_limit(req.limit + 1).and_offset(req.offset);
    let order: Order = req.order.into();
    let id = || (SortByString::for_field("id"), Order::Asc);
    let score = || (SortBySimilarityScore, Order::Desc);
    let (hits, total): (Vec<Hit>, usize) = match req.sort {
        SortBy::Relevance => {
            let (docs, total) =
                searcher.search(query, &(top.order_by(((SortBySimilarityScore, order), id())), Count))?;
            (docs.into_iter().map(|((s, id), _)| hit(id, s)).collect(), total)
        }
        SortBy::CreatedAt | SortBy::UpdatedAt => {
            let field = if req.sort == SortBy::CreatedAt {
                "created_at"
            } else {
                "updated_at"
            };
            let key = (SortByStaticFastValue::<i64>::for_field(field), order);
            let (docs, total) = searcher.search(query, &(top.order_by((key, score(), id())), Count))?;
            (docs.into_iter().map(|((_, s, id), _)| hit(id, s)).collect(), total)
        }
        SortBy::Title => {
            let key = (SortByString::for_field("title_sort"), order);
            let (docs, total) = searcher.search(query, &(top.order_by((key, score(), id())), Count))?;
            (docs.into_iter().map(|((_, s, id), _)| hit(id, s)).collect(), total)
        }
    };
    let mut hits = hits;
    let more = hits.len() > req.limit;
    hits.truncate(req.limit);
    Ok(HitPage {
        hits,
        more,
        total,
        typos,
    })
}

fn hit(id: Option<String>, score: f32) -> Hit {
    Hit {
        id: id.unwrap_or_default(),
        score,
    }
}

/// Longest stretch of a body looked at for its highlight.
const HIGHLIGHT_SCAN_BYTES: usize = 64 * 1024;
/// Characters of body around the matches.
const BODY_SNIPPET_CHARS: usize = 200;

/// Highlights of results: matches wrapped in `<mark>…</mark>`, everything
/// else HTML-escaped.
pub struct Highlighter {
    title: SnippetGenerator,
    body: SnippetGenerator,
    prefix: Option<String>,
    analyzer: tantivy::tokenizer::TextAnalyzer,
}

impl Highlighter {
    pub fn new(generation: &Generation, query: &UserQuery) -> Result<Highlighter, SearchError> {
        let mut builder = query_builder(generation)?;
        let (terms, prefix) = builder.highlight_terms(query);
        let weights: BTreeMap<String, f32> = terms.into_iter().map(|t| (t, 1.0)).collect();
        let fields: &Fields = &generation.fields;
        let analyzer = builder.text.clone();
        Ok(Highlighter {
            title: SnippetGenerator::new(weights.clone(), analyzer.clone(), fields.title, 500),
            body: SnippetGenerator::new(weights, analyzer.clone(), fields.body, BODY_SNIPPET_CHARS),
            prefix,
            analyzer: prefix_analyzer(),
        })
    }

    pub fn title(&mut self, text: &str) -> Option<String> {
        highlight(&self.title, text, self.prefix.as_deref(), &mut self.analyzer, true)
    }

    pub fn body(&mut self, text: &str) -> Option<String> {
        let mut end = text.len().min(HIGHLIGHT_SCAN_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        highlight(
            &self.body,
            &text[..end],
            self.prefix.as_deref(),
            &mut self.analyzer,
            false,
        )
    }
}

/// The HTML of `text`'s best fragment with its matches marked, or `None`
/// when nothing in it matches.
fn highlight(
    generator: &SnippetGenerator,
    text: &str,
    prefix: Option<&str>,
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    whole: bool,
) -> Option<String> {
    // Short text is shown whole rather than as a fragment.
    let whole = whole || text.len() <= BODY_SNIPPET_CHARS;
    let snippet = generator.snippet(text);
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let (fragment, offset) = if snippet.highlighted().is_empty() {
        // Only the typed prefix may match: mark words beginning with it.
        let prefix = prefix?;
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            if t.text.starts_with(prefix) {
                ranges.push(t.offset_from..t.offset_to);
            }
        }
        let first = ranges.first()?.start;
        if whole {
            (text, 0)
        } else {
            let start = floor_boundary(text, first.saturating_sub(BODY_SNIPPET_CHARS / 4));
            let end = floor_boundary(text, (start + BODY_SNIPPET_CHARS).min(text.len()));
            ranges.retain(|r| r.end <= end);
            (&text[start..end], start)
        }
    } else {
        let range = snippet.fragment_range();
        ranges = snippet
            .highlighted()
            .iter()
            .map(|r| r.start + range.start..r.end + range.start)
            .collect();
        if whole {
            (text, 0)
        } else {
            (&text[range.clone()], range.start)
        }
    };
    let mut html = String::with_capacity(fragment.len() + 32);
    let mut at = 0;
    for r in ranges {
        let (start, end) = (r.start - offset, r.end - offset);
        if start < at || end > fragment.len() {
            continue;
        }
        escape_into(&mut html, &fragment[at..start]);
        html.push_str("<mark>");
        escape_into(&mut html, &fragment[start..end]);
        html.push_str("</mark>");
        at = end;
    }
    escape_into(&mut html, &fragment[at..]);
    Some(html)
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// HTML-escape `text` (element content and attribute values alike).
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        let mut s = String::new();
        escape_into(&mut s, r#"<b a="1">&'x'"#);
        assert_eq!(s, "&lt;b a=&quot;1&quot;&gt;&amp;&#39;x&#39;");
    }
}
