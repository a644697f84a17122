//! Listings: `/v2/_catalog` and `/v2/<name>/tags/list`, paged with
//! `Link: <…>; rel="next"` (distribution spec, "Listing Repositories" and
//! "Listing Tags").
//!
//! A listing is data from the registry, and its names end up in request
//! paths and destination names, so:
//! - every name is checked against the Distribution grammar
//!   ([`is_valid_repository`], [`is_valid_tag`]); a bad one is set aside in
//!   [`Listing::rejected`], never used;
//! - a `next` link is resolved against the page it came with and must stay
//!   on the registry's origin;
//! - a link seen before is a loop, and pages and names are capped
//!   ([`super::ClientOptions::max_list_pages`], [`super::ClientOptions::max_list_names`]),
//!   so a registry cannot keep slim listing forever or fill its memory.

use std::collections::HashSet;

use reqwest::Url;
use reqwest::header::HeaderMap;

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::origin::{self, Origin};
use super::reply::{header_str, read_limited};
use super::request::Call;
use crate::reference::{is_valid_repository, is_valid_tag};

/// At most this much JSON per page.
const MAX_PAGE_BYTES: u64 = 4 << 20;

/// The names a registry listed, and those it listed that are not names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Valid names, in the registry's order.
    pub names: Vec<String>,
    /// Names outside the grammar, as sent (show them with [`escaped`]).
    pub rejected: Vec<String>,
}

/// A name from a registry, quoted and escaped for a terminal or a report
/// (control characters and quotes escaped, long names cut).
pub fn escaped(name: &str) -> String {
    const MAX: usize = 100;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &name[..cut]),
        None => format!("{name:?}"),
    }
}

impl RegistryClient {
    /// Tags of a repository (`/v2/<name>/tags/list`, every page).
    pub fn list_tags(&self, registry: &str, repository: &str) -> Result<Listing, RegistryError> {
        let what = format!("listing tags of {registry}/{repository}");
        if !is_valid_repository(repository) {
            return Err(RegistryError::Protocol {
                what,
                reason: format!("{} is not a repository name", escaped(repository)),
            });
        }
        self.paginated_list(
            registry,
            repository,
            &Scope::pull(repository),
            &format!("/v2/{repository}/tags/list?n=1000"),
            "tags",
            is_valid_tag,
            &what,
        )
    }

    /// Repositories of a registry (`/v2/_catalog`, every page).
    pub fn catalog(&self, registry: &str) -> Result<Listing, RegistryError> {
        self.paginated_list(
            registry,
            "",
            &Scope::catalog(),
            "/v2/_catalog?n=1000",
            "repositories",
            is_valid_repository,
            &format!("listing repositories of {registry}"),
        )
    }

    /// The string array under `key` of every page, sorted into valid and
    /// rejected names.
    #[allow(clippy::too_many_arguments)]
    fn paginated_list(
        &self,
        registry: &str,
        repository: &str,
        scope: &Scope,
        first: &str,
        key: &str,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<Listing, RegistryError> {
        let host = crate::reference::api_host(registry);
        let protocol = |reason: String| RegistryError::Protocol {
            what: what.to_string(),
            reason,
        };
        let base = self.base(host)?;
        let registry_origin = Origin::parse(&base);
        let mut url = Url::parse(&format!("{base}{first}"))
            .map_err(|e| protocol(format!("cannot make a URL of {base}{first}: {e}")))?;
        let mut seen: HashSet<Url> = HashSet::new();
        let mut out = Listing::default();
        loop {
            if !seen.insert(url.clone()) {
                return Err(protocol(format!(
                    "its next-page link repeats an earlier page ({url}), so the listing would never end; \
                     ask the registry's operator to fix its pagination"
                )));
            }
            if seen.len() > self.opts.max_list_pages {
                return Err(protocol(format!(
                    "it has more than {} pages; slim stops there",
                    self.opts.max_list_pages
                )));
            }
            let resp = Call::on(host, repository, scope.clone(), what)
                .get(url.clone())
                .send(self)?;
            let next = next_link(resp.headers());
            let answered_at = resp.url().clone();
            let body = read_limited(resp, MAX_PAGE_BYTES, what)?;
            // Bounded in values too: a page of `[0,0,…]` costs 16 bytes of
            // memory for each 2 bytes of text.
            let page = crate::image::parse_json(what, &body, crate::image::MAX_JSON_VALUES)
                .map_err(|e| protocol(format!("unreadable answer: {e}")))?;
            for name in page[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
            {
                if valid(name) {
                    out.names.push(name.to_string());
                } else {
                    out.rejected.push(name.to_string());
                }
            }
            if out.names.len() + out.rejected.len() > self.opts.max_list_names {
                return Err(protocol(format!(
                    "it lists more than {} names; slim stops there",
                    self.opts.max_list_names
                )));
            }
            let Some(next) = next else {
                return Ok(out);
            };
            url = origin::resolve(&answered_at, &next)
                .map_err(|why| protocol(format!("its next-page link points at {why}")))?;
            if Origin::of(&url) != registry_origin {
                return Err(protocol(format!(
                    "its next-page link points at another origin ({url}); slim follows a listing only on the registry itself"
                )));
            }
        }
    }
}

/// The target of `Link: <…>; rel="next"` (RFC 8288; one header may hold
/// several links).
fn next_link(h: &HeaderMap) -> Option<String> {
    let v = header_str(h, "link")?;
    v.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::options::ClientOptions;
    use std::io::{BufRead, BufReader, Write};

    /// A loopback catalog that never ends: every page holds `per_page` new
    /// names and links to the next.
    fn endless_catalog(per_page: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for (page, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let names: Vec<String> = (0..per_page).map(|i| format!("r{page}-{i}")).collect();
                let body = serde_json::json!({ "repositories": names }).to_string();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\
                     Link: </v2/_catalog?last=r{page}&n=1000>; rel=\"next\"\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn a_listing_that_never_ends_is_cut_at_the_page_or_name_cap() {
        let client = RegistryClient::new(ClientOptions {
            max_list_pages: 20,
            max_list_names: 100,
            ..ClientOptions::default()
        })
        .unwrap();
        let pages = endless_catalog(1);
        let err = client.catalog(&pages).unwrap_err().to_string();
        assert!(
            err.contains("more than 20 pages") && err.contains(&pages),
            "{err}"
        );
        let names = endless_catalog(30);
        let err = client.catalog(&names).unwrap_err().to_string();
        assert!(
            err.contains("more than 100 names") && err.contains(&names),
            "{err}"
        );
    }

    #[test]
    fn link_headers() {
        let link = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("link", v.parse().unwrap());
            next_link(&h)
        };
        assert_eq!(
            link("</v2/_catalog?last=b&n=2>; rel=\"next\"").as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            link("</a>; rel=\"prev\", <http://r/v2/_catalog?last=c>; rel=next").as_deref(),
            Some("http://r/v2/_catalog?last=c")
        );
        assert_eq!(link("</a>; rel=\"prev\""), None);
    }

    #[test]
    fn names_are_shown_escaped_and_cut() {
        assert_eq!(escaped("a\u{1b}[2J\"b"), "\"a\\u{1b}[2J\\\"b\"");
        assert_eq!(escaped(""), "\"\"");
        let long = escaped(&"é".repeat(300));
        assert!(
            long.ends_with("\"…") && long.chars().count() == 103,
            "{long}"
        );
    }
}
