//! Proxy configuration: the shipped example loads; unsafe or malformed ones are refused with
//! the key named.

use voxgate_sip::config::{ConfigError, ProxyConfig};
use voxgate_sip::sdp::EncryptionPolicy;

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/proxy.toml"
    ))
    .unwrap()
}

fn err(text: &str) -> String {
    ProxyConfig::from_toml(text).unwrap_err().to_string()
}

#[test]
fn the_example_loads() {
    let cfg = ProxyConfig::from_toml(&example()).unwrap();
    assert_eq!(cfg.domains[0].users.len(), 2);
    assert_eq!(
        cfg.policy("a.example", "alice"),
        Some(EncryptionPolicy::Mandatory)
    );
    assert_eq!(
        cfg.policy("A.EXAMPLE", "bob"),
        Some(EncryptionPolicy::Optional)
    );
    assert_eq!(cfg.policy("b.example", "alice"), None);
    assert_eq!(cfg.auth.nonce_lifetime_secs, 30);
}

#[test]
fn sdes_over_udp_or_tcp_is_refused_at_load_time() {
    for transport in ["udp", "tcp"] {
        let text = example().replace(
            "[tls]",
            &format!(
                "[[listen]]\ntransport = \"{transport}\"\naddress = \"127.0.0.1:5060\"\n\n[tls]"
            ),
        );
        let e = err(&text);
        assert!(
            e.contains("domain[0].encryption") || e.contains("domain[0].user"),
            "{e}"
        );
        assert!(e.contains("only over TLS") && e.contains(transport), "{e}");
    }
    // With encryption off everywhere, plain listeners are fine.
    let text = example()
        .replace(
            "[tls]",
            "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n[tls]",
        )
        .replace("encryption = \"mandatory\"", "encryption = \"off\"")
        .replace("encryption = \"optional\"", "encryption = \"off\"");
    ProxyConfig::from_toml(&text).unwrap();
    // A per-account policy that encrypts is refused too.
    let text = example()
        .replace(
            "[tls]",
            "[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:5060\"\n\n[tls]",
        )
        .replace("encryption = \"mandatory\"", "encryption = \"off\"");
    assert!(err(&text).contains("domain[0].user[1].encryption"));
}

#[test]
fn bad_configurations_name_the_key() {
    let e = err(&example().replace(
        "nonce_lifetime_secs = 30",
        "nonce_lifetime_secs = 30\nnonce_lifetme = 5",
    ));
    assert!(e.contains("nonce_lifetme"), "unknown key named: {e}");
    let e = err(&example().replace("transport = \"tls\"", "transport = \"sctp\""));
    assert!(e.contains("sctp") || e.contains("transport"), "{e}");
    let e = err(&example().replace("name = \"bob\"", "name = \"alice\""));
    assert!(
        e.contains("domain[0].user[1].name") && e.contains("twice"),
        "{e}"
    );
    let e = err(&example().replace("  password = \"change me too\"\n", ""));
    assert!(
        e.contains("domain[0].user[1]") && e.contains("password"),
        "{e}"
    );
    let e = err(&example().replace("[tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server.key\"\nclient_ca = \"certs/ca.pem\"     # accept client certificates from this CA (optional)\n", ""));
    assert!(e.contains("tls"), "{e}");
    let e = err(&example().replace("address = \"127.0.0.1:5061\"", "address = \"localhost\""));
    assert!(e.contains("address") || e.contains("socket"), "{e}");
    assert!(matches!(
        ProxyConfig::from_toml("not toml ["),
        Err(ConfigError::Syntax(_))
    ));
}
