//! The pages: the dashboard at `/` and a payout address's page at `/miner/ADDRESS`, each one
//! HTML page with inline CSS and JavaScript, compiled into the binary. Both poll the JSON API
//! every few seconds and draw their charts by hand (SVG); the style and the helpers they
//! share (`page.css`, `page.js`: number formats, tables, address links, charts) are inlined
//! into each where it says `/*PAGE_CSS*/` and `/*PAGE_JS*/`.

use std::sync::LazyLock;

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

fn assemble(template: &str) -> String {
    template
        .replace("/*PAGE_CSS*/", CSS)
        .replace("/*PAGE_JS*/", JS)
}

/// The page served at `/`.
pub static DASHBOARD: LazyLock<String> = LazyLock::new(|| assemble(include_str!("dashboard.html")));

/// The page served at `/miner/ADDRESS` (its script reads the address from the path).
pub static MINER: LazyLock<String> = LazyLock::new(|| assemble(include_str!("miner.html")));

/// The page for a path, if it is one of the dashboard's.
pub fn page(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/index.html" | "/dashboard" | "/static/" | "/static/index.html" => {
            Some(DASHBOARD.as_str())
        }
        _ => None,
    }
}

/// `text` with the characters HTML gives meaning to escaped.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
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
    out
}

/// A small page for a refused `/miner/` path: the status, why, and the way back.
pub fn error_page(status: u16, why: &str) -> String {
    let title = match status {
        400 => "Not a payout address",
        404 => "Unknown address",
        _ => "Error",
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{status} {title} · P2Pool</title><style>body{{font:15px/1.5 system-ui,sans-serif;\
         margin:40px auto;max-width:640px;padding:0 20px;color:#1c2430}}h1{{font-size:20px}}\
         a{{color:#3b6fd8}}</style></head><body><h1>{status} · {title}</h1><p id=\"why\">{}</p>\
         <p><a href=\"/\">Back to the dashboard</a>, where every address links to its page.</p>\
         </body></html>\n",
        escape_html(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pages_get_the_shared_style_and_script() {
        for page in [DASHBOARD.as_str(), MINER.as_str()] {
            assert!(page.starts_with("<!doctype html>"));
            assert!(!page.contains("/*PAGE_CSS*/") && !page.contains("/*PAGE_JS*/"));
            assert!(
                page.contains("function si("),
                "the shared helpers are inlined"
            );
        }
    }

    #[test]
    fn error_pages_escape_what_they_echo() {
        let page = error_page(400, "bad <script>\"x\"");
        assert!(page.contains("bad &lt;script&gt;&quot;x&quot;"));
        assert!(!page.contains("<script>"));
    }
}
