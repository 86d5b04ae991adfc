//! The console's frame (header, navigation, namespace picker) and the
//! small pieces every page uses. maud escapes every value it writes.

use super::Session;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tonic::Status;

/// The screens, in the navigation's order: (title, path).
const SCREENS: [(&str, &str); 6] = [
    ("Collections", "/console/collections"),
    ("Types", "/console/types"),
    ("Services", "/console/services"),
    ("Mesh", "/console/mesh"),
    ("Metrics", "/console/metrics"),
    ("Logs", "/console/logs"),
];

/// What `enc` leaves as it is: letters, digits and RFC 3986's unreserved
/// marks.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` as one URL path segment or query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, KEPT).to_string()
}

/// A 303 to `to` (after a POST the browser GETs the new page).
pub fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A whole page: the frame around `body`. `ns` is the namespace the
/// screens show ("" for the key's default).
pub fn page(title: &str, s: Option<&Session>, ns: &str, body: Markup) -> Response {
    let with_ns = |path: &str| match ns {
        "" => path.to_string(),
        ns => format!("{path}?ns={}", enc(ns)),
    };
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Collector" }
                link rel="stylesheet" href="/console/assets/style.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "Collector" }
                    @if let Some(s) = s {
                        nav {
                            @for (name, path) in SCREENS {
                                a href=(with_ns(path)) aria-current=[(name == title).then_some("page")] { (name) }
                            }
                        }
                        form.ns method="get" {
                            label { "namespace " input name="ns" value=(ns) placeholder="all" size="12"; }
                        }
                        span.who title="the key you are signed in with" {
                            (s.identity.key_id)
                            @if s.identity.operator { " (operator)" }
                        }
                        form method="post" action="/console/logout" { button.link type="submit" { "Sign out" } }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        doc.into_string(),
    )
        .into_response()
}

/// A failed call: its code and message, which say what to fix.
pub fn problem(e: &Status) -> Markup {
    html! {
        div.problem role="alert" {
            strong { (format!("{:?}", e.code())) } ": " (e.message())
        }
    }
}

/// Optional: a `problem` when there is one.
pub fn problem_of(e: Option<&Status>) -> Markup {
    html! { @if let Some(e) = e { (problem(e)) } }
}

/// A timestamp as the API gives it (RFC 3339), or "".
pub fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(|t| t.to_string()).unwrap_or_default()
}

/// Microseconds since the epoch as RFC 3339 (0: "").
pub fn time_us(us: i64) -> String {
    match us {
        0 => String::new(),
        us => crate::util::timestamp(us).to_string(),
    }
}

/// `labels` as `k=v` lines, sorted.
pub fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    l.join("\n")
}

/// Parses `k=v` pairs, one a line or comma-separated.
pub fn parse_labels(text: &str) -> Result<std::collections::HashMap<String, String>, Status> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    Status::invalid_argument(format!("label {:.60?} is not key=value", l))
                })
        })
        .collect()
}

/// The page of collection `ns`/`name`.
pub fn collection_url(ns: &str, name: &str) -> String {
    format!("/console/c/{}/{}", enc(ns), enc(name))
}

/// The page of record `id` of `ns`/`name`.
pub fn record_url(ns: &str, name: &str, id: &str) -> String {
    format!("{}/r/{}", collection_url(ns, name), enc(id))
}
