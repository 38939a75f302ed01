//! The scan page: static assets (HTML, JS, CSS and vendored libraries from `node/assets/scan/`)
//! embedded in the binary and served at `/scan/`. The page verifies everything itself in the
//! browser against several operators; this module only hands out files.

use include_dir::{include_dir, Dir};
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets/scan");

/// Files under these prefixes are for development only (tests and fixtures), never served.
const PRIVATE: &[&str] = &["test/", "package.json"];

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("md" | "txt") | None => "text/plain; charset=utf-8",
        Some(_) => "application/octet-stream",
    }
}

/// The embedded file at `path` (relative to the scan directory), if it may be served.
pub fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    let path = if path.is_empty() { "index.html" } else { path };
    if PRIVATE.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    ASSETS
        .get_file(path)
        .map(|f| (f.contents(), content_type(path)))
}

fn serve(tail: &str) -> Response {
    match asset(tail) {
        Some((body, ct)) => {
            let mut r = Response::new(body.into());
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
            // The page loads nothing from elsewhere but the federation's own APIs.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'self'; connect-src *; img-src 'self' data: blob:; style-src 'self'; script-src 'self'",
                ),
            );
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            r
        }
        None => warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response(),
    }
}

/// `GET /scan` (redirects to `/scan/`, keeping the query) and `GET /scan/<file>`.
pub fn routes() -> warp::filters::BoxedFilter<(Response,)> {
    // `path!("scan")` also matches "/scan/": only the bare form redirects.
    let bare = warp::path!("scan")
        .and(warp::get())
        .and(warp::path::full())
        .and_then(|full: warp::path::FullPath| async move {
            if full.as_str() == "/scan" {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(|q: String| {
            let to = if q.is_empty() {
                "/scan/".to_string()
            } else {
                format!("/scan/?{q}")
            };
            warp::reply::with_header(StatusCode::MOVED_PERMANENTLY, header::LOCATION, to)
                .into_response()
        });
    let files = warp::path("scan")
        .and(warp::get())
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| serve(tail.as_str()));
    bare.or(files).unify().boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_scan_redirects_and_the_directory_serves_the_page() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let get = |path: &str| rt.block_on(warp::test::request().path(path).reply(&routes()));
        let r = get("/scan?item=ab");
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "/scan/?item=ab");
        let r = get("/scan/?item=ab");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(std::str::from_utf8(r.body()).is_ok_and(|b| b.contains("<html")));
    }

    #[test]
    fn serves_the_page_and_hides_tests() {
        let (body, ct) = asset("").expect("index.html is embedded");
        assert!(ct.starts_with("text/html"));
        assert!(std::str::from_utf8(body).is_ok_and(|s| s.contains("<html")));
        assert!(asset("hallmark.js").is_some_and(|(_, ct)| ct.starts_with("text/javascript")));
        assert!(asset("test/verify.test.mjs").is_none());
        assert!(asset("../Cargo.toml").is_none());
    }
}
