use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[site]
id = "s1"
[[camera]]
id = "c1"
source = "rtsp://user:secret@10.1.2.3:554/live"
[outputs.jsonl]
path = "-"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("site.toml"), Path::new("/etc/matthan"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.analysis.fps, DEFAULT_ANALYSIS_FPS);
    assert_eq!(c.models.dir, Path::new("/etc/matthan/models/fetched"));
    assert_eq!(
        c.cameras[0].detect,
        vec![DetectKind::Plates, DetectKind::Faces]
    );
    assert!(c.cameras[0].realtime);
}

#[test]
fn relative_file_sources_resolve_against_the_config_folder() {
    let c = parse(&MINIMAL.replace("rtsp://user:secret@10.1.2.3:554/live", "file://clips/a.mp4"))
        .unwrap();
    assert_eq!(
        c.cameras[0].source,
        Source::File("/etc/matthan/clips/a.mp4".into())
    );
}

#[test]
fn credentials_never_reach_messages() {
    let c = parse(MINIMAL).unwrap();
    let shown = c.cameras[0].source.display();
    assert!(
        !shown.contains("secret") && !shown.contains("user"),
        "{shown}"
    );
    let e = error(&MINIMAL.replace(
        "rtsp://user:secret@10.1.2.3:554/live",
        "rtp://user:secret@h/x",
    ));
    assert!(!e.contains("secret"), "{e}");
    // Nor the broker's, in the URL the agent refuses to take them from.
    for url in ["mqtt://u:s3cret@h", "mqtt://u:s3cret@h:99999"] {
        let e = error(&MINIMAL.replace(
            "[outputs.jsonl]\npath = \"-\"",
            &format!("[outputs.mqtt]\nurl = '{url}'"),
        ));
        assert!(
            e.contains("outputs.mqtt.url") && !e.contains("s3cret"),
            "{e}"
        );
    }
    // A password holding `/` makes a URL parser take user and password for
    // the host: refused, with the fix, and still never shown.
    let e = error(&MINIMAL.replace(
        "rtsp://user:secret@10.1.2.3:554/live",
        "rtsp://admin:1234/secret@10.0.0.9/live",
    ));
    assert!(
        e.contains("percent-encoded") && !e.contains("secret") && !e.contains("1234"),
        "{e}"
    );
    // Credentials in the path and query, as the XMEye family takes them.
    let xmeye = "rtsp://10.0.0.9:554/user=admin&password=abc123&channel=1&stream=0.sdp?";
    let c = parse(&MINIMAL.replace("rtsp://user:secret@10.1.2.3:554/live", xmeye)).unwrap();
    assert_eq!(
        c.cameras[0].source.display(),
        "rtsp://10.0.0.9:554/user=***&password=***&channel=1&stream=0.sdp?"
    );
    assert_eq!(
        schema::redact("rtsp://h/Streaming/Channels/101?UserName=a&PWD=b"),
        "rtsp://h/Streaming/Channels/101?UserName=***&PWD=***"
    );
    // A URL where a table was wanted: toml quotes it back in its message.
    let e = error(&MINIMAL.replace(
        "[outputs.jsonl]",
        "location = \"rtsp://admin:pw123@10.0.0.9/live\"\n[outputs.jsonl]",
    ));
    assert!(e.contains("location") && !e.contains("pw123"), "{e}");
    // A password holding a quote does not end the URL early.
    for line in [
        "source = \"rtsp://admin:pa'ss123@10.0.0.9/live\"",
        "source = 'rtsp://admin:pa\"ss123@10.0.0.9/live'",
        "rtspsrc location=rtsp://admin:pa'ss123@10.0.0.9/live: 401",
    ] {
        let shown = super::hide_credentials(line);
        assert!(
            !shown.contains("ss123") && shown.contains("10.0.0.9"),
            "{shown}"
        );
    }
}

#[test]
fn errors_name_file_key_and_fix() {
    let cases: &[(&str, &str, &str)] = &[
        ("[site]", "[site]\ncolour = 'red'", "unknown field `colour`"),
        (
            "[[camera]]\nid = \"c1\"",
            "[[camera]]\nid = \"c1\"\nlocation = { lat = 91.0, lon = 0.0 }",
            "`camera[0].location.lat`: 91 is not a latitude",
        ),
        (
            "[[camera]]\nid = \"c1\"",
            "[[camera]]\nid = \"c1\"\nlocation = { lat = 1.0, lon = 200.0 }",
            "`camera[0].location.lon`",
        ),
        (
            "id = \"c1\"",
            "id = \"c 1\"",
            "`camera[0].id`: `c 1` is not a valid id",
        ),
        ("id = \"s1\"", "id = \"\"", "`site.id`"),
        ("[site]", "[analysis]\nfps = 0\n[site]", "`analysis.fps`"),
        (
            "[site]",
            "[analysis]\nfps = 1e-300\n[site]",
            "`analysis.fps`",
        ),
        (
            "[site]",
            "[analysis]\nplate_threshold = 0\n[site]",
            "`analysis.plate_threshold`: 0 would report every patch of noise",
        ),
        (
            "[site]",
            "[analysis]\nface_threshold = 0.01\n[site]",
            "`analysis.face_threshold`",
        ),
        (
            "[site]",
            "[storage]\noutbox_max_age_hours = 1e16\n[site]",
            "`storage.outbox_max_age_hours`",
        ),
        (
            "[site]",
            "[storage]\noutbox_max_mb = 17592186044416\n[site]",
            "`storage.outbox_max_mb`",
        ),
        (
            "[site]",
            "[analysis]\nplate_threshold = 1.5\n[site]",
            "`analysis.plate_threshold`",
        ),
        (
            "[site]",
            "[models]\nthreads = 0\n[site]",
            "`models.threads`",
        ),
        (
            "[site]",
            "[models]\nplate_reader = 'x.bin'\n[site]",
            "`models.plate_reader`",
        ),
        (
            "rtsp://user:secret@10.1.2.3:554/live",
            "http://10.1.2.3/live",
            "not a camera source",
        ),
        (
            "rtsp://user:secret@10.1.2.3:554/live",
            "file://",
            "names no file",
        ),
        (
            "[[camera]]\nid = \"c1\"",
            "[[camera]]\nid = \"c1\"\ndetect = []",
            "`camera[0].detect`",
        ),
        (
            "[[camera]]\nid = \"c1\"",
            "[[camera]]\nid = \"c1\"\ndetect = ['cars']",
            "unknown variant `cars`",
        ),
        (
            "[[camera]]\nid = \"c1\"",
            "[[camera]]\nid = \"c1\"\nloop = true",
            "`camera[0].loop`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs]",
            "no output is configured",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'http://x'",
            "`outputs.mqtt.url`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\nqos = 3",
            "`outputs.mqtt.qos`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\nqos = 0",
            "write qos = 1",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\nqos = 2",
            "write qos = 1",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\ntopic_prefix = 'a/#'",
            "`outputs.mqtt.topic_prefix`",
        ),
        ("[site]\nid = \"s1\"", "[site]\nid = 5", "line 3"),
        (
            "[site]\nid = \"s1\"",
            "[site]\nid = \"s1\"\n[events]\nmax_delay_seconds = 0",
            "`events.max_delay_seconds`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\nclient_id = ''",
            "`outputs.mqtt.client_id`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://matthan:pw@x'",
            "`outputs.mqtt.url`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtts://x'\nclient_cert_file = 'c.pem'\nclient_key_file = 'k.pem'",
            "`outputs.mqtt.ca_file`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\ntopic_prefix = '/matthan'",
            "`outputs.mqtt.topic_prefix`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.mqtt]\nurl = 'mqtt://x'\ntopic_prefix = '$SYS/m'",
            "`outputs.mqtt.topic_prefix`",
        ),
        (
            "[outputs.jsonl]\npath = \"-\"",
            "[outputs.jsonl]\npath = \"\"",
            "`outputs.jsonl.path`",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(MINIMAL.contains(from), "bad test case {from}");
        let e = error(&MINIMAL.replacen(from, to, 1));
        assert!(e.starts_with("site.toml: "), "{e}");
        assert!(e.contains(expected), "expected `{expected}` in `{e}`");
    }
}

#[test]
fn duplicate_camera_ids_are_rejected() {
    let text = format!("{MINIMAL}\n[[camera]]\nid = \"c1\"\nsource = \"rtsp://h/2\"\n");
    let e = error(&text);
    assert!(
        e.contains("`camera[1].id`: `c1` is used by an earlier camera")
            && e.contains("(camera `c1`, the [[camera]] table number 2)"),
        "{e}"
    );
}

#[test]
fn no_camera_is_an_error() {
    let e = error("[site]\nid = 's'\n[outputs.jsonl]\npath = '-'\n");
    assert!(e.contains("`camera`: no camera is configured"), "{e}");
}

#[test]
fn shipped_examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    for name in ["demo.toml", "example-site.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
