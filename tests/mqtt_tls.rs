//! The IOC broker behind TLS with mutual authentication and a password:
//! a real Mosquitto with certificates made at test time by openssl.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is not installed")
        .success();
    assert!(ok, "openssl {args:?} failed");
}

fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=matthan test CA",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[test]
fn events_reach_a_tls_broker_with_client_certificate_and_password() {
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    make_pki(d);
    const PASSWORD: &str = "s3cret-pass-do-not-log";
    let ok = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(d.join("passwd"))
        .args(["gw-07", PASSWORD])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mosquitto_passwd failed");
    std::fs::write(d.join("mqtt.password"), format!("{PASSWORD}\n")).unwrap();

    let (tls_port, plain_port) = (free_port(), free_port());
    let conf = d.join("mosquitto.conf");
    // `user root`: started as root, Mosquitto would switch to its own user,
    // which cannot read the keys in this private temporary folder.
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\nuser root\n\
             listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n\
             allow_anonymous false\npassword_file {d}/passwd\n\
             listener {plain_port} 127.0.0.1\nallow_anonymous true\n",
            d = d.display()
        ),
    )
    .unwrap();
    let _broker = Mosquitto::spawn(&conf, &[tls_port, plain_port]);
    let sub = Subscriber::connect(plain_port, "matthan/v1/#");

    let frames = shared().join("data/vn_plate_detect_extra/dungnt_parking_gate/images");
    let clip = d.join("car.mp4");
    clip_from_images(&[frames.join("e4a7bc1c-37112.jpg")], 3, &clip);
    let mut agent = Agent::start(&format!(
        r#"
[site]
id = "s"
[models]
dir = "{models}"
[storage]
dir = "{d}/state"
[[camera]]
id = "gate"
source = "file://{clip}"
realtime = false
detect = ["plates"]
[outputs.mqtt]
url = "mqtts://127.0.0.1:{tls_port}"
ca_file = "{d}/ca.pem"
client_cert_file = "{d}/client.pem"
client_key_file = "{d}/client.key"
username = "gw-07"
password_file = "{d}/mqtt.password"
"#,
        models = models_dir().display(),
        d = d.display(),
        clip = clip.display(),
    ));
    sub.wait_until(
        Duration::from_secs(60),
        "the plate event through the TLS listener",
        |m| {
            m.iter().any(|r| {
                r.topic == "matthan/v1/s/gate/event/plate" && r.text().contains("51A60216")
            })
        },
    );
    agent.process.wait_exit(Duration::from_secs(30));
    let log = agent.log_text();
    assert!(log.contains("connected to MQTT broker"), "{log}");
    assert!(!log.contains(PASSWORD), "the password must never be logged");
}
