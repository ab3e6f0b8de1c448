//! The query language and how it becomes a Tantivy query.
//!
//! - words: every word must match, in the title or the body (stemmed, so
//!   `running` finds `runs`); a title match weighs [`TITLE_BOOST`] times more;
//! - `"a phrase"`: the words in that order, in the title or the body;
//! - `-word`, `-"a phrase"`: items containing it are left out;
//! - the last word, unless the query ends with a space, also matches words
//!   that begin with it (search as you type), from 2 characters on;
//! - typo tolerance (see [`Typos`]): a word of 5–8 characters also matches
//!   words one edit away, 9 or more characters two edits, when it is on.
//!
//! Anything else (`+`, `:`, parentheses, `*`) is ordinary text: a query never
//! fails to parse.

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, FuzzyTermQuery, Occur, PhraseQuery, Query,
    TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Term};
use tantivy::tokenizer::TextAnalyzer;

use crate::schema::{tokens, Fields, TITLE_BOOST};

/// Longest accepted query text, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most words and phrases in one query.
pub const MAX_CLAUSES: usize = 32;

/// One part of a query as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    Word { text: String, negated: bool, prefix: bool },
    Phrase { text: String, negated: bool },
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserQuery {
    pub clauses: Vec<Clause>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("q must be at most {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("q has more than {MAX_CLAUSES} words and phrases")]
    TooManyClauses,
}

impl UserQuery {
    pub fn parse(q: &str) -> Result<UserQuery, QueryError> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong);
        }
        let mut clauses = Vec::new();
        let mut chars = q.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else { break };
            let mut negated = false;
            if first == '-' {
                chars.next();
                negated = true;
                if chars.peek().is_none_or(|c| c.is_whitespace()) {
                    continue; // a lone `-` is nothing
                }
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                let text: String = chars.by_ref().take_while(|c| *c != '"').collect();
                if !text.trim().is_empty() {
                    clauses.push(Clause::Phrase { text, negated });
                }
            } else {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '"' {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                clauses.push(Clause::Word {
                    text,
                    negated,
                    prefix: false,
                });
            }
        }
        if clauses.len() > MAX_CLAUSES {
            return Err(QueryError::TooManyClauses);
        }
        let ends_open = q.chars().last().is_some_and(|c| !c.is_whitespace() && c != '"');
        if ends_open {
            if let Some(Clause::Word {
                negated: false, prefix, ..
            }) = clauses.last_mut()
            {
                *prefix = true;
            }
        }
        Ok(UserQuery { clauses })
    }

    pub fn has_positive(&self) -> bool {
        self.clauses.iter().any(|c| match c {
            Clause::Word { negated, .. } | Clause::Phrase { negated, .. } => !negated,
        })
    }
}

/// Edits a word may be away from what it matches, by its length:
/// 1 edit for 5–8 characters, 2 for 9 or more, none below 5.
pub fn allowed_edits(word: &str) -> u8 {
    match word.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// Whether words may match with typos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typos {
    Exact,
    Tolerated,
}

/// Filters every query carries.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// The collections the caller may see (already narrowed to one when the
    /// request names a `collection_id`). Never empty when searching.
    pub collection_ids: Vec<String>,
    /// Items must have every one of these tags.
    pub tags: Vec<String>,
}

/// Turns user queries into Tantivy queries for one index.
pub struct QueryBuilder {
    pub fields: Fields,
    pub text: TextAnalyzer,
    pub prefix: TextAnalyzer,
}

impl QueryBuilder {
    /// The full query: the permission filter, the tag filters and the
    /// text clauses.
    pub fn build(&mut self, user: &UserQuery, filters: &Filters, typos: Typos) -> Box<dyn Query> {
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        must.push((Occur::Must, self.permission_filter(&filters.collection_ids)));
        for tag in &filters.tags {
            let term = Term::from_field_text(self.fields.tags, tag);
            must.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    0.0,
                )),
            ));
        }
        let mut any_positive = false;
        for clause in &user.clauses {
            let (negated, query) = match clause {
                Clause::Word { text, negated, prefix } => {
                    let typos = if *negated { Typos::Exact } else { typos };
                    (*negated, self.word(text, *prefix && !negated, typos))
                }
                Clause::Phrase { text, negated } => (*negated, self.phrase(text)),
            };
            let Some(query) = query else {
                // A word with no indexable characters (`--`, `!!`): it
                // restricts nothing.
                continue;
            };
            if negated {
                must.push((Occur::MustNot, query));
            } else {
                any_positive = true;
                must.push((Occur::Must, query));
            }
        }
        if !any_positive {
            must.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(AllQuery), 0.0))));
        }
        Box::new(BooleanQuery::new(must))
    }

    /// The one permission filter: documents of these collections only.
    fn permission_filter(&self, collection_ids: &[String]) -> Box<dyn Query> {
        if collection_ids.is_empty() {
            return Box::new(EmptyQuery);
        }
        let terms: Vec<Term> = collection_ids
            .iter()
            .map(|c| Term::from_field_text(self.fields.collection_id, c))
            .collect();
        // A set query turns the collections' documents into one bit set per
        // segment, which the text query then probes; a union of term queries
        // would merge the collections' postings for every document tried.
        let filter: Box<dyn Query> = match <[Term; 1]>::try_from(terms) {
            Ok([one]) => Box::new(TermQuery::new(one, IndexRecordOption::Basic)),
            Err(terms) => Box::new(TermSetQuery::new(terms)),
        };
        Box::new(ConstScoreQuery::new(filter, 0.0))
    }

    /// Title or body, title boosted.
    fn either_field(&self, make: impl Fn(Field) -> Box<dyn Query>) -> Vec<(Occur, Box<dyn Query>)> {
        vec![
            (
                Occur::Should,
                Box::new(BoostQuery::new(make(self.fields.title), TITLE_BOOST)) as Box<dyn Query>,
            ),
            (Occur::Should, make(self.fields.body)),
        ]
    }

    fn word(&mut self, raw: &str, prefix: bool, typos: Typos) -> Option<Box<dyn Query>> {
        let toks = tokens(&mut self.text, raw);
        if toks.len() > 1 {
            // `e-mail`, `node.js`: several tokens are matched as a phrase.
            return self.phrase(raw);
        }
        let stem = toks.into_iter().next();
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(stem) = &stem {
            should.extend(self.either_field(|f| {
                Box::new(TermQuery::new(
                    Term::from_field_text(f, stem),
                    IndexRecordOption::WithFreqs,
                ))
            }));
            let edits = allowed_edits(raw);
            if typos == Typos::Tolerated && edits > 0 {
                should.extend(self.either_field(|f| {
                    // Constant score, below an exact match's.
                    Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new(Term::from_field_text(f, stem), edits, true)),
                        0.5,
                    ))
                }));
            }
        }
        if prefix {
            let typed = tokens(&mut self.prefix, raw).into_iter().next();
            if let Some(typed) = typed.filter(|t| t.chars().count() >= 2) {
                should.extend(self.either_field(|f| {
                    Box::new(BoostQuery::new(
                        Box::new(FuzzyTermQuery::new_prefix(Term::from_field_text(f, &typed), 0, false)),
                        0.5,
                    ))
                }));
                // A partly typed word may already be longer than its stem
                // (`programmi` → `program`).
                let chars: Vec<char> = typed.chars().collect();
                for cut in 1..=3 {
                    if chars.len() > cut + 3 {
                        let shorter: String = chars[..chars.len() - cut].iter().collect();
                        should.extend(self.either_field(|f| {
                            Box::new(BoostQuery::new(
                                Box::new(TermQuery::new(
                                    Term::from_field_text(f, &shorter),
                                    IndexRecordOption::Basic,
                                )),
                                0.5,
                            ))
                        }));
                    }
                }
            }
        }
        if should.is_empty() {
            None
        } else {
            Some(Box::new(BooleanQuery::new(should)))
        }
    }

    fn phrase(&mut self, raw: &str) -> Option<Box<dyn Query>> {
        let toks = tokens(&mut self.text, raw);
        match toks.len() {
            0 => None,
            1 => self.word(&toks[0], false, Typos::Exact).or_else(|| {
                Some(Box::new(BooleanQuery::new(self.either_field(|f| {
                    Box::new(TermQuery::new(
                        Term::from_field_text(f, &toks[0]),
                        IndexRecordOption::WithFreqs,
                    ))
                }))))
            }),
            _ => Some(Box::new(BooleanQuery::new(self.either_field(|f| {
                let terms = toks.iter().map(|t| Term::from_field_text(f, t)).collect();
                Box::new(PhraseQuery::new(terms))
            })))),
        }
    }

    /// The indexed terms a result's text should highlight: those of the
    /// words and phrases asked for (not excluded ones), plus the typed
    /// prefix of the last word.
    pub fn highlight_terms(&mut self, user: &UserQuery) -> (Vec<String>, Option<String>) {
        let mut terms = Vec::new();
        let mut prefix = None;
        for clause in &user.clauses {
            match clause {
                Clause::Word { negated: true, .. } | Clause::Phrase { negated: true, .. } => {}
                Clause::Word { text, prefix: p, .. } => {
                    terms.extend(tokens(&mut self.text, text));
                    if *p {
                        prefix = tokens(&mut self.prefix, text)
                            .into_iter()
                            .next()
                            .filter(|t| t.chars().count() >= 2);
                    }
                }
                Clause::Phrase { text, .. } => terms.extend(tokens(&mut self.text, text)),
            }
        }
        (terms, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, negated: bool, prefix: bool) -> Clause {
        Clause::Word {
            text: text.into(),
            negated,
            prefix,
        }
    }

    #[test]
    fn parses_words_phrases_exclusions_and_the_open_last_word() {
        let q = UserQuery::parse(r#"rust "async book" -java -"old stuff" prog"#).unwrap();
        assert_eq!(
            q.clauses,
            vec![
                word("rust", false, false),
                Clause::Phrase {
                    text: "async book".into(),
                    negated: false
                },
                word("java", true, false),
                Clause::Phrase {
                    text: "old stuff".into(),
                    negated: true
                },
                word("prog", false, true),
            ]
        );
        let closed = UserQuery::parse("rust prog ").unwrap();
        assert_eq!(closed.clauses.last(), Some(&word("prog", false, false)));
        let negated_last = UserQuery::parse("rust -prog").unwrap();
        assert_eq!(negated_last.clauses.last(), Some(&word("prog", true, false)));
    }

    #[test]
    fn odd_input_never_fails() {
        for q in ["", "   ", "-", "\"", "\"unclosed phrase", "a:b (c) *", "- - -"] {
            assert!(UserQuery::parse(q).is_ok(), "{q:?}");
        }
        assert!(!UserQuery::parse("-only -negations").unwrap().has_positive());
        assert!(UserQuery::parse("\"unclosed phrase").unwrap().has_positive());
        assert_eq!(UserQuery::parse(&"x".repeat(1001)), Err(QueryError::TooLong));
        assert_eq!(UserQuery::parse(&"a ".repeat(33)), Err(QueryError::TooManyClauses));
    }

    #[test]
    fn typo_budget_grows_with_length() {
        assert_eq!(allowed_edits("rust"), 0);
        assert_eq!(allowed_edits("tokio"), 1);
        assert_eq!(allowed_edits("database"), 1);
        assert_eq!(allowed_edits("databases"), 2);
    }
}
