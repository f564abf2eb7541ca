//! The shop page: `GET /` and `GET /assets/{file}`, static files embedded in the binary.
//!
//! The page (`api/web/`: `index.html`, ES modules, one stylesheet, an icon) is a plain
//! client of the public v1 contract — it calls the same REST routes and `/ws` as any
//! other client and gets nothing from the edge that they do not. There is no build step:
//! the files are served as written, compiled into the binary with `include_bytes!`.
//!
//! Caching. All assets share one version, a hash of their bytes computed once at start.
//! `index.html` is served with its `/assets/…` references rewritten to
//! `/assets/v-{version}/…`, and ES module imports are relative, so a whole page load
//! asks only for versioned URLs: those are `immutable` for a year. The page itself and
//! unversioned (or stale-versioned) asset URLs are `no-cache`: they revalidate with their
//! `ETag` and get a 304 when nothing changed. A new binary means new URLs, never a mix of
//! old and new modules.
//!
//! Security headers: a Content-Security-Policy that allows only the page's own scripts,
//! styles and images and connections back to this host (HTTP and WebSocket), no inline
//! script or style, no framing; `nosniff` on everything.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

/// One embedded file under `/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the page loads besides `index.html`. A module imported by another must be
/// listed here too (a unit test checks the imports).
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "live.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/live.js"),
    },
    Asset {
        name: "format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/format.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/icon.svg"),
    },
];

/// The page, as written; its `"/assets/` references are versioned when served.
const INDEX_HTML: &str = include_str!("../../web/index.html");

/// Versioned asset URLs never change content: cache them for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page and unversioned asset URLs: always revalidate (cheap, thanks to the ETag).
const REVALIDATE: &str = "no-cache";

/// The policy of the page, before `connect-src`'s WebSocket origins are added.
const CSP_BASE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// What is computed once from the embedded files.
struct Site {
    /// Hash of every asset, in hex; the `v-{version}` path segment.
    version: String,
    /// `index.html` with versioned asset URLs.
    index: String,
    /// The ETag of `index`.
    index_etag: HeaderValue,
    /// The ETag of each asset, in `ASSETS` order.
    asset_etags: Vec<HeaderValue>,
}

static SITE: LazyLock<Site> = LazyLock::new(|| {
    let mut all = Fnv::new();
    let asset_etags = ASSETS
        .iter()
        .map(|a| {
            all.write(a.name.as_bytes());
            all.write(a.body);
            etag(Fnv::new().write(a.body).finish())
        })
        .collect();
    let version = format!("{:016x}", all.finish());
    let index = INDEX_HTML.replace("\"/assets/", &format!("\"/assets/v-{version}/"));
    let index_etag = etag(Fnv::new().write(index.as_bytes()).finish());
    Site {
        version,
        index,
        index_etag,
        asset_etags,
    }
});

/// FNV-1a, 64 bits: a content fingerprint for ETags and the asset version (not security).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) -> &mut Fnv {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn etag(hash: u64) -> HeaderValue {
    // Hex digits and quotes only: always a valid header value.
    HeaderValue::from_str(&format!("\"{hash:016x}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `GET /` (the page) and `GET /assets/{*path}` (its files). Stateless, so it merges into
/// any router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

/// `GET /`: the page, with its Content-Security-Policy.
async fn index(headers: HeaderMap) -> Response {
    let site = &*SITE;
    let mut res = cached(
        &headers,
        &site.index_etag,
        REVALIDATE,
        "text/html; charset=utf-8",
        site.index.as_bytes(),
    );
    let h = res.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(&headers)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// `GET /assets/{*path}`: `v-{version}/{name}` (immutable when the version is current) or
/// `{name}` (revalidated).
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let site = &*SITE;
    let (cache, name) = match path.split_once('/') {
        Some((segment, name)) => match segment.strip_prefix("v-") {
            Some(v) if v == site.version => (IMMUTABLE, name),
            // A page from an older binary: serve what there is now, but do not let it
            // be cached under the old version's URL.
            Some(_) => (REVALIDATE, name),
            None => return not_found(),
        },
        None => (REVALIDATE, path.as_str()),
    };
    match ASSETS
        .iter()
        .zip(&site.asset_etags)
        .find(|(a, _)| a.name == name)
    {
        Some((a, tag)) => cached(&headers, tag, cache, a.content_type, a.body),
        None => not_found(),
    }
}

fn not_found() -> Response {
    crate::error::AppError::not_found("no such file").into_response()
}

/// A 200 with the body, or a 304 when the client's `If-None-Match` already names `tag`.
fn cached(
    req: &HeaderMap,
    tag: &HeaderValue,
    cache: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> Response {
    let fresh = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == tag.as_bytes());
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = body.into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        res
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, tag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The page's policy. `connect-src 'self'` covers same-origin `ws:`/`wss:` in current
/// browsers (CSP 3); older ones need the WebSocket origin spelled out, so it is added for
/// the request's `Host` when that is a plain host[:port].
fn content_security_policy(req: &HeaderMap) -> String {
    let host = req
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(h) => format!("{CSP_BASE}; connect-src 'self' ws://{h} wss://{h}"),
        None => format!("{CSP_BASE}; connect-src 'self'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = routes::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec();
        (status, headers, body)
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn the_page_is_html_with_a_strict_policy_and_versioned_assets() {
        let (status, h, body) = get("/", &[("host", "127.0.0.1:8080")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&h, "cache-control"), "no-cache");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        let csp = header(&h, "content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080",
        ] {
            assert!(csp.contains(part), "{part} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        let html = String::from_utf8(body).unwrap();
        let versioned = format!("\"/assets/v-{}/", SITE.version);
        assert!(html.contains(&format!("{versioned}app.js\"")), "{html}");
        assert!(html.contains(&format!("{versioned}app.css\"")), "{html}");
        assert!(
            !html.contains("\"/assets/app"),
            "every asset URL is versioned"
        );
    }

    #[tokio::test]
    async fn a_strange_host_is_left_out_of_the_policy() {
        let (_, h, _) = get("/", &[("host", "evil.example; script-src *")]).await;
        let csp = header(&h, "content-security-policy");
        assert!(csp.ends_with("connect-src 'self'"), "{csp}");
    }

    #[tokio::test]
    async fn every_asset_has_its_type_and_versioned_urls_are_immutable() {
        for a in ASSETS {
            let url = format!("/assets/v-{}/{}", SITE.version, a.name);
            let (status, h, body) = get(&url, &[]).await;
            assert_eq!(status, StatusCode::OK, "{url}");
            assert_eq!(header(&h, "content-type"), a.content_type, "{url}");
            assert_eq!(header(&h, "cache-control"), IMMUTABLE, "{url}");
            assert_eq!(body, a.body, "{url}");

            let (status, h, _) = get(&format!("/assets/{}", a.name), &[]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(header(&h, "cache-control"), REVALIDATE);
            let (status, h, _) = get(&format!("/assets/v-0123/{}", a.name), &[]).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a stale version still gets the file"
            );
            assert_eq!(header(&h, "cache-control"), REVALIDATE);
        }
    }

    #[tokio::test]
    async fn etags_answer_304() {
        let (_, h, _) = get("/assets/app.js", &[]).await;
        let tag = header(&h, "etag").to_owned();
        assert!(tag.starts_with('"'), "{tag}");
        let (status, h, body) = get("/assets/app.js", &[("if-none-match", &tag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(header(&h, "etag"), tag);
        let (status, _, _) = get("/assets/app.js", &[("if-none-match", "\"nope\"")]).await;
        assert_eq!(status, StatusCode::OK);
        let (_, h, _) = get("/", &[]).await;
        let tag = header(&h, "etag").to_owned();
        let weak = format!("\"x\", W/{tag}");
        let (status, _, _) = get("/", &[("if-none-match", &weak)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn unknown_files_are_404() {
        for uri in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/v-x/../../Cargo.toml",
            "/assets/sub/app.js",
            "/assets/v-1/sub/app.js",
        ] {
            let (status, _, _) = get(uri, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
    }

    /// `from "./x.js"` in any module must name an embedded asset, or the page breaks.
    #[test]
    fn every_module_import_is_embedded() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for part in text.split("from \"./").skip(1) {
                let name = part.split('"').next().unwrap();
                assert!(
                    ASSETS.iter().any(|b| b.name == name),
                    "{} imports {name}, which is not in ASSETS",
                    a.name
                );
            }
        }
        for part in INDEX_HTML.split("\"/assets/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(ASSETS.iter().any(|b| b.name == name), "index.html: {name}");
        }
    }
}
