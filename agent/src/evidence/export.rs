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
use crate::durable;

/// Vietnam keeps UTC+7 all year.
const LOCAL_OFFSET_HOURS: i8 = 7;

pub fn export(root: &Path, id: &str, out: &Path, key: &GatewayKey) -> anyhow::Result<Report> {
    export_with(root, id, out, key, durable::copy_synced)
}

/// `copy` copies one of the package's files (the tests give one that
/// damages the copy).
fn export_with(
    root: &Path,
    id: &str,
    out: &Path,
    key: &GatewayKey,
    copy: impl Fn(&Path, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
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
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(src.join(super::package::MANIFEST))?)
            .context("the package's manifest is not JSON")?;
    same_package(&manifest, id, &src)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for entry in std::fs::read_dir(&src)?.flatten() {
        copy(&entry.path(), &out.join(entry.file_name()))?;
    }
    durable::write_synced(
        &out.join("index.html"),
        page(&manifest, &report, key).as_bytes(),
    )?;
    durable::write_synced(
        &out.join("VERIFY.txt"),
        verify_text(&report, key).as_bytes(),
    )?;
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
    durable::write_synced(
        &out.join(verify::EXPORT_SIGNATURE),
        &serde_json::to_vec_pretty(&signature)?,
    )?;
    // `exported` releases the package for deletion: only a copy that is on
    // disk and checks out as a whole may let the original go.
    sync_folders(out)?;
    check_copy(out, id, key)?;
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

/// Refuses a folder holding another package than its name: exporting it
/// would log `exported` for a package that was never copied (an earlier
/// export put back under another name verifies on its own).
fn same_package(manifest: &Value, id: &str, src: &Path) -> anyhow::Result<()> {
    let holds = manifest["package"].as_str().unwrap_or("");
    if holds != id {
        bail!(
            "{} holds package {holds:?} (its manifest says so), not {id}: not exported. \
             Keep the folder as it is and report it; `matthan evidence verify` shows what it holds",
            src.display()
        );
    }
    Ok(())
}

/// Syncs the export folder, so its files' names are on disk, and the
/// folder above it, so the export folder's own name is.
fn sync_folders(out: &Path) -> anyhow::Result<()> {
    durable::sync_dir(out)?;
    match absolute(out).parent() {
        Some(parent) => durable::sync_dir(parent),
        None => Ok(()),
    }
}

/// Verifies the copy as written, with the gateway's key.
fn check_copy(out: &Path, id: &str, key: &GatewayKey) -> anyhow::Result<()> {
    let copy = verify::verify(out, Some(&key.public()))?;
    if !copy.passed() {
        bail!(
            "the copy of package {id} in {} does not verify, so it is not logged as exported \
             and the package stays kept. Remove {} and export again to a new folder \
             (check the disk if it happens again):\n{}",
            out.display(),
            out.display(),
            copy.print()
        );
    }
    Ok(())
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

/// Whether the event is a valid plate read: a `plate.unreadable` event
/// carries the characters the reader saw, which are no plate.
fn valid_read(event: &Value) -> bool {
    event["kind"].as_str() != Some("plate.unreadable")
        && event["plate"]["valid"].as_bool() != Some(false)
}

/// What a reader must not miss, each in both of the page's languages: the
/// manifest says it, and the data bar alone would not.
fn warnings(m: &Value, valid: bool) -> String {
    let mut out = String::new();
    if !valid {
        out.push_str(
            "<p class=\"warning\" id=\"not-a-plate\"><strong>Cảnh báo: đây không phải là \
             kết quả đọc biển số hợp lệ.</strong> Các ký tự bên dưới là những gì máy đọc \
             được, không phải biển số của xe.<br><strong>Warning: this is not a valid plate \
             read.</strong> The characters below are what the reader saw, not the \
             vehicle's plate.</p>",
        );
    }
    if m["clock_stepped_back"].as_bool() == Some(true) {
        out.push_str(
            "<p class=\"warning\" id=\"clock-stepped-back\"><strong>Cảnh báo: đồng hồ của \
             thiết bị đã bị lùi lại</strong> trong khi gói bằng chứng được tạo; thời gian \
             ghi nhận có thể không đúng.<br><strong>Warning: the gateway's clock stepped \
             back</strong> while the package was made; the times shown may be wrong.</p>",
        );
    }
    out
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
    let kind = text(event, &["kind"]);
    let valid = valid_read(event);
    let data = [
        row("Loại sự kiện / Event kind", kind),
        row(
            if valid {
                "Biển số / Plate"
            } else {
                "Ký tự đọc được / Characters read (not a valid plate)"
            },
            text(plate, &["text"]),
        ),
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
    let warnings = warnings(m, valid);
    let title = if valid {
        esc(text(plate, &["text"]))
    } else {
        "không đọc được biển số / no valid plate read".to_string()
    };
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
.warning {{ background: #fff3cd; border: 2px solid #a36b00; padding: .5em; margin-bottom: 1em; font-size: 1.2em; }}
img, video {{ max-width: 100%; border: 1px solid #ccc; }}
.crops img {{ max-height: 240px; margin-right: 1em; }}
.note {{ color: #555; font-size: .9em; }}
.files td {{ padding: .2em .8em .2em 0; font-size: .9em; }}
</style></head>
<body data-video="none">
<h1>Evidence <span id="plate-text">{title}</span></h1>
{warnings}<table class="bar">{data}</table>
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
        fingerprint = esc(&key.fingerprint()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::package::tests::stored;

    fn plate_event(kind: &str, text: &str, valid: bool) -> Value {
        serde_json::json!({
            "id": "e1",
            "kind": kind,
            "time": "2025-03-01T02:03:04.005Z",
            "site": { "id": "s" },
            "camera": { "id": "gate", "name": "Gate" },
            "plate": { "text": text, "chars": text, "valid": valid, "colour": "white" },
        })
    }

    fn store() -> (tempfile::TempDir, GatewayKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(&dir.path().join("keys")).unwrap();
        (dir, key)
    }

    fn exported(root: &Path, id: &str) -> bool {
        custody::entries(root)
            .unwrap()
            .iter()
            .any(|e| e.action == Action::Exported && e.package == id)
    }

    fn manifest(event: Value, clock_stepped_back: bool) -> Value {
        serde_json::json!({
            "package": "p1",
            "event": event,
            "clock_stepped_back": clock_stepped_back,
            "files": [],
        })
    }

    fn shown(m: &Value) -> String {
        let (_dir, key) = store();
        page(m, &Report::default(), &key)
    }

    #[test]
    fn the_page_warns_of_an_unreadable_plate_and_a_clock_stepped_back() {
        let normal = shown(&manifest(plate_event("plate", "51G-123.45", true), false));
        assert!(normal.contains("plate-text\">51G-123.45<"), "{normal}");
        assert!(normal.contains("Event kind</th><td>plate<"), "{normal}");
        assert!(!normal.contains("class=\"warning\""), "{normal}");

        let unreadable = shown(&manifest(
            plate_event("plate.unreadable", "5IG-I23", false),
            false,
        ));
        assert!(unreadable.contains("id=\"not-a-plate\""), "{unreadable}");
        assert!(unreadable.contains("not a valid plate read"));
        assert!(unreadable.contains("không phải là kết quả đọc biển số hợp lệ"));
        assert!(unreadable.contains("Event kind</th><td>plate.unreadable<"));
        assert!(
            !unreadable.contains("Biển số / Plate<"),
            "the characters are shown as a plate"
        );
        assert!(!unreadable.contains("plate-text\">5IG-I23<"));
        assert!(
            unreadable.contains("5IG-I23"),
            "the characters read are hidden"
        );

        let stepped = shown(&manifest(plate_event("plate", "51G-123.45", true), true));
        assert!(stepped.contains("id=\"clock-stepped-back\""), "{stepped}");
        assert!(stepped.contains("clock stepped back"));
        assert!(!stepped.contains("id=\"not-a-plate\""));
    }

    #[test]
    fn a_folder_holding_another_package_is_not_exported() {
        let (dir, key) = store();
        let root = dir.path().join("evidence");
        stored(&root, &key, "b", plate_event("plate", "51G-123.45", true));
        // b's export, put back in the store as a.
        export(&root, "b", &root.join("a"), &key).unwrap();
        let report = verify::verify(&root.join("a"), Some(&key.public())).unwrap();
        assert!(report.print().contains("package b"), "{}", report.print());

        let err = export(&root, "a", &dir.path().join("out"), &key).expect_err("a was exported");
        assert!(
            format!("{err:#}").contains("holds package \"b\""),
            "{err:#}"
        );
        assert!(!exported(&root, "a"));
    }

    #[test]
    fn a_copy_that_does_not_verify_is_not_logged_as_exported() {
        let (dir, key) = store();
        let root = dir.path().join("evidence");
        stored(&root, &key, "p1", plate_event("plate", "51G-123.45", true));
        // A disk that returns other bytes than were written.
        let damaging = |from: &Path, to: &Path| -> anyhow::Result<()> {
            durable::copy_synced(from, to)?;
            if to.ends_with("frame.jpg") {
                let mut bytes = std::fs::read(to)?;
                bytes[20] ^= 1;
                std::fs::write(to, bytes)?;
            }
            Ok(())
        };
        let out = dir.path().join("out");
        let err = export_with(&root, "p1", &out, &key, damaging)
            .expect_err("a damaged copy was exported");
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        assert!(
            !exported(&root, "p1"),
            "a damaged copy released the package"
        );

        export(&root, "p1", &dir.path().join("good"), &key).unwrap();
        assert!(exported(&root, "p1"));
    }
}
