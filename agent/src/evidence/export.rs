//! `matthan evidence export`: a self-contained folder an officer opens in
//! any browser, with no network: the package's own files, unchanged, and
//! an `index.html` that shows them with the data bar and the result of
//! verifying them at export time.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::custody::{self, Action};
use super::keys::GatewayKey;
use super::verify::{self, Report};

/// Vietnam keeps UTC+7 all year.
const LOCAL_OFFSET_HOURS: i8 = 7;

pub fn export(root: &Path, id: &str, out: &Path, key: &GatewayKey) -> anyhow::Result<Report> {
    let src = root.join(id);
    if !src.join(super::package::MANIFEST).is_file() {
        bail!(
            "no evidence package {id} in {}; `matthan evidence list` shows the packages there",
            root.display()
        );
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty; give a new folder",
            out.display()
        );
    }
    let report = verify::verify(&src, Some(&key.public()))?;
    if !report.passed() {
        // A changed package is not shown as evidence, nor logged as exported
        // (which would release it for deletion): it is kept as it is.
        bail!(
            "package {id} does not verify; not exported. Keep it as it is and report it:\n{}",
            report.print()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for entry in std::fs::read_dir(&src)?.flatten() {
        let to = out.join(entry.file_name());
        std::fs::copy(entry.path(), &to).with_context(|| {
            format!("cannot copy {} to {}", entry.path().display(), to.display())
        })?;
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(src.join(super::package::MANIFEST))?)
            .context("the package's manifest is not JSON")?;
    std::fs::write(out.join("index.html"), page(&manifest, &report, key))
        .with_context(|| format!("cannot write {}", out.join("index.html").display()))?;
    std::fs::write(out.join("VERIFY.txt"), verify_text(&report, key))
        .with_context(|| format!("cannot write {}", out.join("VERIFY.txt").display()))?;
    // The pages are written after sealing, so the manifest's signature
    // cannot cover them: the export signs them, with the package they show.
    let mut pages = Vec::new();
    for page in verify::EXPORT_PAGES {
        pages.push((page, crate::digest::sha256_file(&out.join(page))?.0));
    }
    let signature = verify::ExportSignature {
        package: id.to_string(),
        public_key: key.public_hex(),
        key_fingerprint: key.fingerprint(),
        signature: key.sign(&verify::export_message(id, &pages)),
    };
    let sig_path = out.join(verify::EXPORT_SIGNATURE);
    std::fs::write(&sig_path, serde_json::to_vec_pretty(&signature)?)
        .with_context(|| format!("cannot write {}", sig_path.display()))?;
    let manifest_sha = crate::digest::sha256_file(&src.join(super::package::MANIFEST))?.0;
    custody::append(
        root,
        key,
        Action::Exported,
        id,
        Some(&manifest_sha),
        &format!("exported to {}", absolute(out).display()),
    )?;
    Ok(report)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn verify_text(report: &Report, key: &GatewayKey) -> String {
    format!(
        "Evidence package exported by matthan {}.\n\n\
         Check it yourself: matthan evidence verify <this folder> --key {}\n\
         The key's fingerprint must be the one registered for the gateway: {}\n\n\
         Result at export time:\n{}",
        env!("CARGO_PKG_VERSION"),
        key.public_hex(),
        key.fingerprint(),
        report.print()
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A number from the manifest, or nothing: never markup.
fn number(v: &Value) -> String {
    v.as_f64().map(|n| n.to_string()).unwrap_or_default()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or("")
}

/// The event's UTC time, and the same instant in Vietnam's time.
fn times(utc: &str) -> (String, String) {
    let local = time::OffsetDateTime::parse(utc, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            let offset = time::UtcOffset::from_hms(LOCAL_OFFSET_HOURS, 0, 0).ok()?;
            let f = time::macros::format_description!(
                "[day]/[month]/[year] [hour]:[minute]:[second].[subsecond digits:3] (UTC+07:00)"
            );
            t.to_offset(offset).format(&f).ok()
        })
        .unwrap_or_default();
    (utc.to_string(), local)
}

fn page(m: &Value, report: &Report, key: &GatewayKey) -> String {
    let event = &m["event"];
    let plate = &event["plate"];
    let camera = &event["camera"];
    let (utc, local) = times(text(event, &["time"]));
    let place = {
        let address = text(camera, &["location", "address"]);
        match (
            camera["location"]["lat"].as_f64(),
            camera["location"]["lon"].as_f64(),
        ) {
            (Some(lat), Some(lon)) => format!("{address} ({lat:.6}, {lon:.6})"),
            _ => address.to_string(),
        }
    };
    let province = text(plate, &["province", "name"]);
    let row = |k: &str, v: &str| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    let data = [
        row("Biển số / Plate", text(plate, &["text"])),
        row("Màu biển / Colour", text(plate, &["colour"])),
        row("Loại / Kind", text(plate, &["kind"])),
        row("Tỉnh / Province", province),
        row("Thời gian / Time (local)", &local),
        row("Time (UTC)", &utc),
        row("Địa điểm / Place", &place),
        row(
            "Camera",
            &match (text(camera, &["name"]), text(camera, &["id"])) {
                ("", id) => format!("{id}, site {}", text(event, &["site", "id"])),
                (name, id) => format!("{name} ({id}), site {}", text(event, &["site", "id"])),
            },
        ),
        row("Event", text(event, &["id"])),
        row(
            "Frame",
            &format!(
                "number {}, stream time {} ms",
                number(&m["frame"]["number"]),
                number(&m["frame"]["stream_time_ms"])
            ),
        ),
        row(
            "Clock",
            &format!(
                "{}; synchronised: {}; max error {} ms",
                text(m, &["clock", "source"]),
                m["clock"]["synchronized"].as_bool().unwrap_or(false),
                number(&m["clock"]["max_error_ms"])
            ),
        ),
        row("Signed by", text(m, &["key_fingerprint"])),
    ]
    .concat();
    let files: String = m["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let name = text(f, &["name"]);
                    // Only the package's own plain file names become links.
                    let link = if name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        format!("<a href=\"{n}\">{n}</a>", n = esc(name))
                    } else {
                        esc(name)
                    };
                    format!(
                        "<tr><td>{link}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        esc(text(f, &["role"])),
                        number(&f["bytes"]),
                        esc(text(f, &["sha256"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (verdict_class, verdict) = if report.passed() {
        (
            "ok",
            "Verified at export: every file matches the signed manifest.",
        )
    } else {
        ("bad", "NOT VERIFIED at export: the package was changed.")
    };
    let details = esc(&report.print());
    let clip = if m["clip"].is_null() {
        let why = m["no_clip_reason"]
            .as_str()
            .unwrap_or("the package does not say why (made by an older agent)");
        format!("<p>No clip: {}.</p>", esc(why))
    } else {
        let complete = if m["clip"]["complete"].as_bool() == Some(true) {
            String::new()
        } else {
            format!("<p class=\"note\">{}</p>", esc(text(m, &["clip", "note"])))
        };
        format!(
            "<video id=\"clip\" src=\"clip.mp4\" controls muted playsinline preload=\"auto\"></video>\
             <p class=\"note\">The camera's original video, not re-encoded; stream time {}–{} ms.</p>{complete}",
            number(&m["clip"]["start_stream_ms"]),
            number(&m["clip"]["end_stream_ms"])
        )
    };
    format!(
        r#"<!doctype html>
<html lang="vi"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Evidence {title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #111; }}
.bar {{ border-collapse: collapse; margin-bottom: 1em; }}
.bar th {{ text-align: left; padding: .2em 1em .2em 0; color: #444; font-weight: normal; }}
.bar td {{ font-weight: bold; }}
#plate-text {{ font-size: 2em; letter-spacing: .05em; }}
.ok {{ background: #e6f4e6; border: 1px solid #2a7a2a; padding: .5em; }}
.bad {{ background: #fbe9e9; border: 1px solid #a32020; padding: .5em; }}
img, video {{ max-width: 100%; border: 1px solid #ccc; }}
.crops img {{ max-height: 240px; margin-right: 1em; }}
.note {{ color: #555; font-size: .9em; }}
.files td {{ padding: .2em .8em .2em 0; font-size: .9em; }}
</style></head>
<body data-video="none">
<h1>Evidence <span id="plate-text">{title}</span></h1>
<table class="bar">{data}</table>
<div id="verification" class="{verdict_class}"><strong>{verdict}</strong>
<details><summary>Details</summary><pre>{details}</pre></details>
<p class="note">Check it again at any time with <code>matthan evidence verify FOLDER</code>; see VERIFY.txt.</p></div>
<h2>Video</h2>{clip}
<h2>Frame the plate was read from</h2><img id="frame" src="frame.jpg" alt="full frame">
<h2>Plate and vehicle</h2><div class="crops"><img id="plate" src="plate.jpg" alt="plate"><img id="vehicle" src="vehicle.jpg" alt="vehicle"></div>
<h2>Files</h2><table class="files"><tr><th>File</th><th>What</th><th>Bytes</th><th>sha256</th></tr>
<tr><td><a href="manifest.json">manifest.json</a></td><td>what, where, when, models, settings, file hashes</td><td></td><td></td></tr>
<tr><td><a href="manifest.sig">manifest.sig</a></td><td>Ed25519 signature of manifest.json, key {fingerprint}</td><td></td><td></td></tr>
{files}</table>
<script>
// Tells a reviewer (and the page test) whether the clip really plays here.
const v = document.getElementById('clip');
if (v) {{
  document.body.dataset.video = 'loading';
  v.addEventListener('timeupdate', () => {{ if (v.currentTime > 0) document.body.dataset.video = 'playing'; }});
  v.addEventListener('error', () => {{ document.body.dataset.video = 'error'; }});
  v.play().catch(() => {{}});
}}
</script>
</body></html>
"#,
        title = esc(text(plate, &["text"])),
        fingerprint = esc(&key.fingerprint()),
    )
}
