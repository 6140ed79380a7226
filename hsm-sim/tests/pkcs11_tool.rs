//! OpenSC's pkcs11-tool against the module: token and PIN setup, RSA/EC/AES
//! key generation, listing, --test and --test-threads.
mod common;

use common::*;
use std::process::Command;

const TOOL: &str = "/usr/bin/pkcs11-tool";

fn run(conf: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(TOOL)
        .arg("--module")
        .arg(module_path())
        .args(args)
        .env("HSM_SIM_CONF", conf)
        .output()
        .expect("run pkcs11-tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pkcs11-tool {args:?} failed:\n{text}");
    text
}

#[test]
fn pkcs11_tool_works() {
    if !std::path::Path::new(TOOL).exists() {
        eprintln!("\n\n!!!!! SKIPPING pkcs11-tool test: {TOOL} is absent (apt-get install opensc) !!!!!\n");
        return;
    }
    let dir = temp_dir("tool");
    let conf = write_conf(&dir, &dir.join("tokens"), "");
    let c = conf.as_path();
    run(
        c,
        &["--init-token", "--slot", "0", "--label", "tooltest", "--so-pin", SO_PIN],
    );
    run(c, &["--init-pin", "--slot", "0", "--so-pin", SO_PIN, "--pin", USER_PIN]);
    let login = ["--login", "--pin", USER_PIN];
    let gen = |extra: &[&str]| run(c, &[&login[..], extra].concat());
    gen(&["--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "rsa"]);
    gen(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "02",
        "--label",
        "ec",
    ]);
    gen(&[
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--id",
        "03",
        "--label",
        "ec384",
    ]);
    gen(&["--keygen", "--key-type", "AES:32", "--id", "04", "--label", "aes"]);

    let list = gen(&["--list-objects"]);
    for needle in [
        "Private Key Object; RSA",
        "Public Key Object; EC",
        "Secret Key Object; AES",
        "label:      aes",
    ] {
        assert!(list.contains(needle), "missing {needle:?} in:\n{list}");
    }

    let test = gen(&["--test"]);
    assert!(test.contains("No errors"), "--test reported errors:\n{test}");

    let threads = run(c, &["--test-threads", "INGISLT0", "--test-threads", "INGISLT0", "-L"]);
    assert!(
        !threads.contains("some errors") && !threads.contains("Unknown test"),
        "{threads}"
    );
    assert!(threads.contains("tooltest"), "{threads}");
}
