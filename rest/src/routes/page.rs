//! The web page: `GET /` (also the load balancer's health check) and `GET /assets/<name>`.
//!
//! Every file of the page is built into the binary from `rest/web/`; nothing is fetched from
//! elsewhere, and a strict Content-Security-Policy holds the page to its own origin. The HTML is
//! rendered once at start-up with the facts the page needs from the server's configuration (the
//! served models, the body limit and its 413 message), so `GET /` touches neither Redis nor
//! storage: it hands out a shared handle on a few kilobytes rendered in advance.

use actix_web::http::header;
use actix_web::{web, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use serde::Serialize;
use stemsep_common::job::DEFAULT_MODEL;

use crate::error::ApiError;
use crate::routes::shorten;
use crate::state::AppState;

/// The page may load scripts, styles, images and data from its own origin only: no inline
/// script or style, no plugins, no framing, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the rendered facts go in `index.html`.
const FACTS_SLOT: &str = "{{server-facts}}";

const INDEX_TEMPLATE: &str = include_str!("../../web/index.html");

/// A file of the page served under `/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// An asset from `rest/web/<name>`.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

/// Every asset the page loads; `index.html` names them as `/assets/<name>`, and the scripts (ES
/// modules) import one another by relative path.
const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("jobs.js", JS),
    asset!("mixer.js", JS),
    asset!("options.js", JS),
];

/// What the page learns from the server without an extra request: the JSON in
/// `<script type="application/json" id="server-facts">`. `GET /apiv1/models`, where the server
/// has it, says more about each model; the page falls back to `models` when it does not.
#[derive(Debug, Serialize)]
struct Facts<'a> {
    /// The model names a request may name (`STEMSEP_MODELS`).
    models: &'a [String],
    /// The model a request without `model` gets.
    default_model: &'static str,
    /// The largest request body, bytes (`STEMSEP_MAX_BODY_MIB`).
    max_body_bytes: usize,
    /// The API's own 413 message, shown when the page refuses a file before sending it.
    too_large: String,
}

/// The rendered page, built once at start-up.
#[derive(Debug, Clone)]
pub struct Page {
    html: Bytes,
}

impl Page {
    /// Renders `index.html` with the served `models` and the body limit (`max_body`, bytes).
    pub fn render(models: &[String], max_body: usize) -> Page {
        let facts = Facts {
            models,
            default_model: DEFAULT_MODEL,
            max_body_bytes: max_body,
            too_large: ApiError::body_too_large(max_body).to_string(),
        };
        let json = serde_json::to_string(&facts).expect("the facts serialise");
        // Inside <script> only `</` could end the element early; JSON allows `\u003c` for `<`.
        let json = json.replace('<', "\\u003c");
        Page {
            html: Bytes::from(INDEX_TEMPLATE.replacen(FACTS_SLOT, &json, 1)),
        }
    }
}

/// The headers every file of the page carries.
fn page_response(content_type: &str) -> HttpResponseBuilder {
    let mut resp = HttpResponse::Ok();
    resp.content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Small files: always revalidate, so a new deployment is seen at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    resp
}

/// The web page. Always 200 while the process serves HTTP and never waits on Redis or storage:
/// the GKE load balancer health-checks this path.
#[utoipa::path(
    get,
    path = "/",
    responses((status = 200, description = "The web page (also the load balancer's health check)", content_type = "text/html"))
)]
pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    page_response("text/html; charset=utf-8").body(state.page.html.clone())
}

/// A file of the web page (script, style sheet, icon), built into the binary.
#[utoipa::path(
    get,
    path = "/assets/{name}",
    params(("name" = String, Path, description = "The file's name, as index.html names it")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = crate::error::ErrorBody),
    )
)]
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no asset {:?}", shorten(&name))))?;
    Ok(page_response(asset.content_type).body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_rendered_once_and_cannot_close_the_script() {
        let models = vec!["htdemucs".to_owned(), "</script><b>".to_owned()];
        let page = Page::render(&models, 16 * 1024 * 1024);
        let html = std::str::from_utf8(&page.html).unwrap();
        assert_eq!(INDEX_TEMPLATE.matches(FACTS_SLOT).count(), 1);
        assert!(!html.contains(FACTS_SLOT));
        assert!(!html.contains("</script><b>"));
        let start = html.find(r#"id="server-facts">"#).unwrap() + r#"id="server-facts">"#.len();
        let end = start + html[start..].find("</script>").unwrap();
        let facts: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(facts["models"][1], "</script><b>");
        assert_eq!(facts["max_body_bytes"], 16 * 1024 * 1024);
        assert!(facts["too_large"].as_str().unwrap().contains("16 MiB"));
    }

    #[test]
    fn every_asset_the_page_names_is_served_and_every_served_one_is_used() {
        let named: Vec<&str> = INDEX_TEMPLATE
            .split("/assets/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        for name in &named {
            assert!(ASSETS.iter().any(|a| a.name == *name), "{name} not served");
        }
        // Scripts are ES modules that import each other by relative path.
        let scripts: String = ASSETS
            .iter()
            .filter(|a| a.content_type == JS)
            .map(|a| std::str::from_utf8(a.body).unwrap())
            .collect();
        for a in ASSETS {
            let imported = scripts.contains(&format!("'./{}'", a.name));
            assert!(
                named.contains(&a.name) || imported,
                "{} is served but never loaded",
                a.name
            );
        }
    }
}
