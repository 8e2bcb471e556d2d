//! The dashboard: one HTML page with inline CSS and JavaScript, compiled into the binary.
//! It polls the JSON API every few seconds and draws its chart by hand (SVG).

/// The page served at `/`.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// The page for a path, if it is one of the dashboard's.
pub fn page(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/index.html" | "/dashboard" | "/static/" | "/static/index.html" => Some(DASHBOARD),
        _ => None,
    }
}
