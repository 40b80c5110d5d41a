//! The `shoal` binary's command-line contract: exit codes, output formats,
//! clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shoal_tests::User;

#[test]
fn profile_init_and_show() {
    let u = User::new().unwrap();
    let r = u.shoal(&["profile", "show"]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("shoal profile init"), "{r:?}");

    let r = u
        .shoal(&[
            "profile",
            "init",
            "--name",
            "alice",
            "--email",
            "a@example.org",
        ])
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let r = u.shoal(&["profile", "show", "-o", "json"]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["name"], "alice");
    assert_eq!(v["email"], "a@example.org");
    let key = v["key"].as_str().unwrap();
    assert!(key.parse::<shoal_protocol::PublicKey>().is_ok());

    let r = u.shoal(&["profile", "show"]).unwrap();
    assert!(r.stdout.contains(key), "{r:?}");

    // The key is never overwritten.
    let r = u.shoal(&["profile", "init", "--name", "mallory"]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("never overwritten"), "{r:?}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let u = User::new().unwrap();
    assert_eq!(u.shoal(&["no-such-command"]).unwrap().code, 2);
    assert_eq!(u.shoal(&["profile", "init"]).unwrap().code, 2);
    assert_eq!(u.shoal(&["-o", "yaml", "profile", "show"]).unwrap().code, 2);
    let r = u.shoal(&["--help"]).unwrap();
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("profile"));
}

#[test]
fn completions_are_printed() {
    let u = User::new().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let r = u.shoal(&["completion", shell]).unwrap();
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("profile"), "{shell}");
    }
}
