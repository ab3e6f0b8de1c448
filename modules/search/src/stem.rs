//! Stemming with a memory of the words already stemmed.
//!
//! Stemming every token was the largest single cost of building the index
//! (about 29 % of a rebuild's CPU time). Words in text follow a Zipf
//! distribution, so nearly every token is a word stemmed moments ago: each
//! analyzer keeps a bounded map from word to stem and runs Tantivy's
//! Snowball stemmer only for words it has not seen. The tokens are exactly
//! those of [`tantivy::tokenizer::Stemmer`] (tested below). The map hashes
//! with FxHash: with SipHash, hashing the words cost as much as stemming them.

use rustc_hash::FxHashMap;
use tantivy::tokenizer::{Language, RawTokenizer, Stemmer, TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer};

/// Words remembered per analyzer; the map is emptied when full (a rebuild
/// runs one analyzer per indexing thread, so this bounds the memory at a
/// few MiB per thread).
const CAPACITY: usize = 50_000;

/// A [`TokenFilter`] stemming like Tantivy's [`Stemmer`], with a cache.
#[derive(Clone)]
pub struct CachedStemmer {
    language: Language,
}

impl CachedStemmer {
    pub fn new(language: Language) -> Self {
        CachedStemmer { language }
    }
}

impl TokenFilter for CachedStemmer {
    type Tokenizer<T: Tokenizer> = CachedStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> CachedStemmerFilter<T> {
        CachedStemmerFilter {
            inner,
            stemmer: TextAnalyzer::builder(RawTokenizer::default())
                .filter(Stemmer::new(self.language))
                .build(),
            cache: FxHashMap::default(),
        }
    }
}

#[derive(Clone)]
pub struct CachedStemmerFilter<T> {
    inner: T,
    /// Stems one word (the raw tokenizer passes it whole).
    stemmer: TextAnalyzer,
    cache: FxHashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for CachedStemmerFilter<T> {
    type TokenStream<'a> = CachedStemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        CachedStemmerStream {
            tail: self.inner.token_stream(text),
            stemmer: &mut self.stemmer,
            cache: &mut self.cache,
        }
    }
}

pub struct CachedStemmerStream<'a, S> {
    tail: S,
    stemmer: &'a mut TextAnalyzer,
    cache: &'a mut FxHashMap<String, String>,
}

impl<S: TokenStream> TokenStream for CachedStemmerStream<'_, S> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(stem) = self.cache.get(token.text.as_str()) {
            token.text.clear();
            token.text.push_str(stem);
            return true;
        }
        let stem = {
            let mut one = self.stemmer.token_stream(&token.text);
            if one.advance() {
                one.token().text.clone()
            } else {
                token.text.clone()
            }
        };
        if self.cache.len() >= CAPACITY {
            self.cache.clear();
        }
        let word = std::mem::replace(&mut token.text, stem.clone());
        self.cache.insert(word, stem);
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::{LowerCaser, SimpleTokenizer};

    fn all(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            out.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        out
    }

    #[test]
    fn tokens_are_those_of_the_plain_stemmer_on_first_sight_and_from_the_cache() {
        let text = "Running runners ran; the runner's generously generalized generalizations run again. \
                    Connections connected, connecting, connection! Ponies and pony; caresses caressed.";
        for language in [Language::English, Language::French, Language::German] {
            let mut plain = TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .filter(Stemmer::new(language))
                .build();
            let mut cached = TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(LowerCaser)
                .filter(CachedStemmer::new(language))
                .build();
            let expected = all(&mut plain, text);
            assert!(expected.iter().any(|(w, ..)| w == "run"), "{expected:?}");
            assert_eq!(all(&mut cached, text), expected, "first pass, {language:?}");
            assert_eq!(all(&mut cached, text), expected, "from the cache, {language:?}");
        }
    }

    #[test]
    fn a_full_cache_starts_over_and_stays_correct() {
        let mut plain = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(Stemmer::new(Language::English))
            .build();
        let mut cached = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(CachedStemmer::new(Language::English))
            .build();
        let words: Vec<String> = (0..CAPACITY + 10).map(|i| format!("walking{i}s")).collect();
        let text = words.join(" ");
        let expected = all(&mut plain, &text);
        assert_eq!(all(&mut cached, &text), expected);
        assert_eq!(all(&mut cached, &text), expected, "after the cache started over");
    }
}
