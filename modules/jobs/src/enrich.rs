//! `ENRICH_URL {item_id}`: fetch the item's `source_url` and store what the
//! page says about itself (title, description, site name, canonical URL,
//! keywords) in `item.metadata.enrichment`, through the items module's write
//! path (so `ItemUpdated` follows).
//!
//! The fetch is guarded: only http(s), every hop's addresses checked by the
//! [`AddressPolicy`] and connected to as checked, at most
//! `jobs.enrich_max_redirects` redirects (each checked again), a connect
//! timeout and a time limit, only `text/html`, at most `jobs.enrich_max_bytes`
//! read. Refusals are not retried (the job is `dead` at once); network
//! failures and 5xx/429 answers are.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_http::ApiError;
use atlas_items::{Item, ItemChange, ItemService};
use atlas_kernel::settings::JobsSettings;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::handler::{JobError, JobHandler, JobRun, JobScope};
use crate::ssrf::{error_chain, AddressPolicy, GuardError};

/// Longest text kept per field.
const FIELD_MAX_CHARS: usize = 1000;
/// Keywords kept at most.
const KEYWORDS_MAX: usize = 20;

/// What a page says about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Enrichment {
    pub title: Option<String>,
    pub description: Option<String>,
    pub site_name: Option<String>,
    pub canonical_url: Option<String>,
    pub keywords: Vec<String>,
    /// The URL the page was finally read from (after redirects).
    pub fetched_url: String,
}

/// The guarded fetcher.
#[derive(Debug, Clone)]
pub struct PageFetcher {
    policy: AddressPolicy,
    connect_timeout: Duration,
    total_timeout: Duration,
    max_bytes: u64,
    max_redirects: u32,
}

impl PageFetcher {
    pub fn from_settings(s: &JobsSettings) -> Result<Self, String> {
        Ok(PageFetcher {
            policy: AddressPolicy::new(&s.enrich_allow_networks)
                .map_err(|e| format!("jobs.enrich_allow_networks: {e}"))?,
            connect_timeout: Duration::from_millis(s.enrich_connect_timeout_ms),
            total_timeout: Duration::from_secs(s.enrich_timeout_secs),
            max_bytes: s.enrich_max_bytes,
            max_redirects: s.enrich_max_redirects,
        })
    }

    /// Fetch an HTML page: `(final URL, body)`.
    pub async fn fetch(&self, url: &str) -> Result<(Url, String), JobError> {
        let mut url = Url::parse(url).map_err(|e| JobError::Fatal(format!("`{url}` is not a URL: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.total_timeout;
        for hop in 0..=self.max_redirects {
            let response = self.request(&url, deadline).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| JobError::Fatal(format!("{url} answered {status} without a Location")))?;
                let next = url
                    .join(location)
                    .map_err(|e| JobError::Fatal(format!("{url} redirects to an invalid URL: {e}")))?;
                tracing::debug!(from = %url, to = %next, hop, "following redirect");
                url = next;
                continue;
            }
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(JobError::Retry(format!("{url} answered {status}")));
            }
            if !status.is_success() {
                return Err(JobError::Fatal(format!("{url} answered {status}")));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !content_type.starts_with("text/html") {
                return Err(JobError::Fatal(format!(
                    "{url} is not an HTML page (Content-Type `{content_type}`)"
                )));
            }
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_bytes) {
                return Err(self.too_large(&url));
            }
            let body = self.read_capped(&url, response, deadline).await?;
            return Ok((url, String::from_utf8_lossy(&body).into_owned()));
        }
        Err(JobError::Fatal(format!(
            "more than {} redirects; gave up at {url}",
            self.max_redirects
        )))
    }

    fn too_large(&self, url: &Url) -> JobError {
        JobError::Fatal(format!("{url} is larger than the {} bytes allowed", self.max_bytes))
    }

    /// One request to `url`, connecting only to its checked addresses.
    async fn request(&self, url: &Url, deadline: tokio::time::Instant) -> Result<reqwest::Response, JobError> {
        let target = self.policy.resolve(url, deadline).await.map_err(|e| match e {
            GuardError::Refused(why) => JobError::Fatal(format!("refused to fetch {url}: {why}")),
            GuardError::Unresolved(why) => JobError::Retry(why),
        })?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(remaining)
            .user_agent(concat!("Atlas/", env!("CARGO_PKG_VERSION"), " (+enrichment)"));
        let client = target
            .pin(builder)
            .build()
            .map_err(|e| JobError::Retry(format!("HTTP client: {e}")))?;
        client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/html")
            .send()
            .await
            .map_err(|e| JobError::Retry(format!("fetching {url} failed: {}", error_chain(&e))))
    }

    async fn read_capped(
        &self,
        url: &Url,
        mut response: reqwest::Response,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, JobError> {
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(deadline, response.chunk())
                .await
                .map_err(|_| JobError::Retry(format!("reading {url} timed out")))?
                .map_err(|e| JobError::Retry(format!("reading {url} failed: {}", error_chain(&e))))?;
            let Some(chunk) = chunk else { return Ok(body) };
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_large(url));
            }
            body.extend_from_slice(&chunk);
        }
    }
}

fn clean(text: &str) -> Option<String> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then(|| collapsed.chars().take(FIELD_MAX_CHARS).collect())
}

/// Read title, description, site name, canonical URL and keywords from
/// `<title>`, `<meta name=description|keywords>`, OpenGraph tags and
/// `<link rel=canonical>`; OpenGraph wins where both exist.
pub fn parse_page(html: &str, url: &Url) -> Enrichment {
    use scraper::{Html, Selector};
    let doc = Html::parse_document(html);
    let sel = |s: &str| Selector::parse(s).ok();
    let first_attr = |selector: &str, attr: &str| -> Option<String> {
        let s = sel(selector)?;
        doc.select(&s).find_map(|e| e.value().attr(attr).and_then(clean))
    };
    let meta = |key: &str| -> Option<String> {
        let s = sel("meta")?;
        doc.select(&s).find_map(|e| {
            let v = e.value();
            let name = v.attr("property").or_else(|| v.attr("name"))?;
            name.eq_ignore_ascii_case(key)
                .then(|| v.attr("content").and_then(clean))
                .flatten()
        })
    };
    let title_tag = sel("title").and_then(|s| doc.select(&s).next().and_then(|e| clean(&e.text().collect::<String>())));
    let absolute = |href: String| url.join(&href).ok().map(|u| u.to_string());
    let canonical = first_attr("link[rel~=canonical]", "href")
        .and_then(absolute)
        .or_else(|| meta("og:url").and_then(absolute));
    let keywords = meta("keywords")
        .map(|k| {
            let mut out: Vec<String> = Vec::new();
            for word in k.split(',').filter_map(clean) {
                if !out.contains(&word) && out.len() < KEYWORDS_MAX {
                    out.push(word);
                }
            }
            out
        })
        .unwrap_or_default();
    Enrichment {
        title: meta("og:title").or(title_tag),
        description: meta("og:description").or_else(|| meta("description")),
        site_name: meta("og:site_name"),
        canonical_url: canonical,
        keywords,
        fetched_url: url.to_string(),
    }
}

/// The `ENRICH_URL` job type.
pub struct EnrichUrl {
    pub items: Arc<ItemService>,
    pub fetcher: PageFetcher,
    pub timeout: Duration,
}

/// `payload.item_id`, or a fatal error.
pub(crate) fn item_id(payload: &Value) -> Result<&str, JobError> {
    payload
        .get("item_id")
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Fatal("the payload has no `item_id`".into()))
}

/// The item a job's payload names, as it is now; a missing one is fatal.
pub(crate) async fn payload_item(items: &ItemService, payload: &Value) -> Result<Item, JobError> {
    items
        .get(item_id(payload)?)
        .await
        .map_err(item_error)?
        .ok_or_else(|| JobError::Fatal("the item does not exist".into()))
}

/// Map an item write error to a job error: a missing item or invalid
/// change will not get better; anything else may.
pub(crate) fn item_error(e: ApiError) -> JobError {
    match e {
        ApiError::NotFound(m) => JobError::Fatal(format!("the item is gone: {m}")),
        ApiError::Validation { message, .. } => JobError::Fatal(message),
        other => JobError::Retry(other.to_string()),
    }
}

#[async_trait]
impl JobHandler for EnrichUrl {
    fn job_type(&self) -> &'static str {
        "ENRICH_URL"
    }
    fn scope(&self) -> JobScope {
        JobScope::Item
    }
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        let item = payload_item(&self.items, &job.payload).await?;
        let id = item.id.as_str();
        let Some(source) = item.source_url.as_deref() else {
            let why = "the item has no source_url".to_string();
            return Err(if job.workflow_id.is_some() {
                JobError::Skip(why)
            } else {
                JobError::Fatal(why)
            });
        };
        let (url, html) = self.fetcher.fetch(source).await?;
        let enrichment = parse_page(&html, &url);
        let value = serde_json::to_value(&enrichment).unwrap_or(Value::Null);
        let change = ItemChange {
            set_metadata: vec![("enrichment".into(), value.clone())],
            ..Default::default()
        };
        self.items.update(id, &change, &job.events).await.map_err(item_error)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_parsed_with_opengraph_first() {
        let html = r#"<!doctype html><html><head>
            <title>  Plain
              title </title>
            <meta name="description" content="plain description">
            <meta property="og:title" content="OG title">
            <meta property="og:site_name" content="Example Site">
            <meta name="keywords" content="rust, async , rust,, web">
            <link rel="canonical" href="/canonical/page">
            </head><body><p>hi</p></body></html>"#;
        let url = Url::parse("http://example.org/a?b=1").unwrap();
        let e = parse_page(html, &url);
        assert_eq!(e.title.as_deref(), Some("OG title"));
        assert_eq!(e.description.as_deref(), Some("plain description"));
        assert_eq!(e.site_name.as_deref(), Some("Example Site"));
        assert_eq!(e.canonical_url.as_deref(), Some("http://example.org/canonical/page"));
        assert_eq!(e.keywords, ["rust", "async", "web"]);
        assert_eq!(e.fetched_url, "http://example.org/a?b=1");

        let bare = parse_page("<title>Only a title</title>", &url);
        assert_eq!(bare.title.as_deref(), Some("Only a title"));
        assert_eq!(bare.description, None);
        assert!(bare.keywords.is_empty());
    }

    #[tokio::test]
    async fn refused_addresses_are_never_contacted() {
        let fetcher = PageFetcher::from_settings(&JobsSettings::default()).unwrap();
        for url in [
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9/",
        ] {
            match fetcher.fetch(url).await {
                Err(JobError::Fatal(why)) => assert!(why.contains("refused"), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(matches!(
            fetcher.fetch("ftp://example.org/").await,
            Err(JobError::Fatal(_))
        ));
    }
}
