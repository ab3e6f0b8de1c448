//! The index schema and its text analysis.
//!
//! Only what queries need is indexed, and no text is stored: results are
//! loaded from the database (their current state, re-checked), and
//! highlights are computed on that text.

use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STRING};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer, RAW_TOKENIZER_NAME,
};
use tantivy::Index;

use crate::SearchError;

/// Analyzer of titles and bodies: words, lower-cased, ASCII-folded, stemmed.
pub const TEXT_ANALYZER: &str = "atlas_text";
/// Analyzer of the last word's prefix: like [`TEXT_ANALYZER`], unstemmed
/// (a stem of a partial word is not a prefix of anything useful).
pub const PREFIX_ANALYZER: &str = "atlas_prefix";

/// Title matches weigh this much more than body matches.
pub const TITLE_BOOST: f32 = 3.0;

/// The fields of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// Item id: keyword, fast (tie-break of every sort, batch lookups).
    pub id: Field,
    /// Keyword, fast: the permission filter.
    pub collection_id: Field,
    /// Fast: the indexed version (`index_status`).
    pub version: Field,
    pub title: Field,
    pub body: Field,
    /// Keyword, one term per tag.
    pub tags: Field,
    /// Keyword: the host of `source_url`.
    pub host: Field,
    /// Fast, microseconds since the epoch.
    pub created_at: Field,
    pub updated_at: Field,
    /// Fast: the lower-cased title, for sorting by title.
    pub title_sort: Field,
}

impl Fields {
    pub fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let keyword_fast = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(RAW_TOKENIZER_NAME)
                    .set_index_option(IndexRecordOption::Basic),
            )
            .set_fast(RAW_TOKENIZER_NAME);
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fast_i64 = NumericOptions::default().set_fast();
        let fields = Fields {
            id: b.add_text_field("id", keyword_fast.clone()),
            collection_id: b.add_text_field("collection_id", keyword_fast),
            version: b.add_i64_field("version", fast_i64.clone()),
            title: b.add_text_field("title", text.clone()),
            body: b.add_text_field("body", text),
            tags: b.add_text_field("tags", STRING),
            host: b.add_text_field("host", STRING),
            created_at: b.add_i64_field("created_at", fast_i64.clone()),
            updated_at: b.add_i64_field("updated_at", fast_i64),
            title_sort: b.add_text_field("title_sort", TextOptions::default().set_fast(RAW_TOKENIZER_NAME)),
        };
        (b.build(), fields)
    }

    /// The fields of an index built with [`Fields::schema`].
    pub fn of(index: &Index) -> Result<Fields, SearchError> {
        let s = index.schema();
        let get = |name: &str| {
            s.get_field(name).map_err(|_| {
                SearchError::Schema(format!("the index has no field `{name}`; run `atlas search reindex`"))
            })
        };
        Ok(Fields {
            id: get("id")?,
            collection_id: get("collection_id")?,
            version: get("version")?,
            title: get("title")?,
            body: get("body")?,
            tags: get("tags")?,
            host: get("host")?,
            created_at: get("created_at")?,
            updated_at: get("updated_at")?,
            title_sort: get("title_sort")?,
        })
    }
}

/// `search.language` → a stemming language.
pub fn language(name: &str) -> Result<Language, SearchError> {
    use Language::*;
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "arabic" => Arabic,
        "danish" => Danish,
        "dutch" => Dutch,
        "english" => English,
        "finnish" => Finnish,
        "french" => French,
        "german" => German,
        "greek" => Greek,
        "hungarian" => Hungarian,
        "italian" => Italian,
        "norwegian" => Norwegian,
        "portuguese" => Portuguese,
        "romanian" => Romanian,
        "russian" => Russian,
        "spanish" => Spanish,
        "swedish" => Swedish,
        "tamil" => Tamil,
        "turkish" => Turkish,
        other => {
            return Err(SearchError::Config(format!(
                "search.language: `{other}` is not a supported stemming language"
            )))
        }
    })
}

/// The analyzer of indexed text for `lang`.
pub fn text_analyzer(lang: Language) -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(crate::stem::CachedStemmer::new(lang))
        .build()
}

/// The analyzer of a typed prefix.
pub fn prefix_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Register the analyzers on an index (they are not persisted with it).
pub fn register_analyzers(index: &Index, lang: Language) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer(lang));
    index.tokenizers().register(PREFIX_ANALYZER, prefix_analyzer());
}

/// The tokens `analyzer` makes of `text`.
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_folded_and_stemmed() {
        let mut a = text_analyzer(Language::English);
        assert_eq!(tokens(&mut a, "Running CAFÉS, databases!"), ["run", "cafe", "databas"]);
        let mut p = prefix_analyzer();
        assert_eq!(tokens(&mut p, "Runni"), ["runni"]);
    }

    #[test]
    fn languages_are_named() {
        assert!(language("English").is_ok());
        assert!(language("klingon").is_err());
    }
}
