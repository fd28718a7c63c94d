//! TLS to PostgreSQL, chosen in the URL with libpq's parameter names.
//!
//! - `sslmode=disable` or `prefer` (the default): plain TCP. (`prefer` never upgrades here: this client has no
//!   unverified TLS, so it would not protect against anyone able to intercept the connection.)
//! - `sslmode=require` or `verify-full`: TLS, the server's certificate verified against the trusted roots and
//!   its name (or IP address) checked against the host connected to. Stricter than libpq's `require`, which
//!   checks nothing.
//! - `sslmode=verify-ca`: TLS, the certificate chain verified but not the host name.
//! - `sslrootcert=/path/ca.pem`: the trusted roots (PEM) — a managed service's CA bundle, such as Amazon RDS's
//!   `global-bundle.pem`, or a CloudNativePG cluster's `<cluster>-ca` secret. Without it, the system's roots.
//!
//! [`split`] takes these parameters out of the URL (tokio-postgres knows only disable, prefer and require, and no
//! `sslrootcert`), and [`connector`] builds the OpenSSL connector.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod};
use postgres_openssl::MakeTlsConnector;

use crate::StoreError;

/// How connections are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tls {
    /// Plain TCP.
    Off,
    /// TLS with a verified certificate chain, from `roots` (else the system's), and the host name too when
    /// `verify_host`.
    Verified {
        roots: Option<PathBuf>,
        verify_host: bool,
    },
}

impl Tls {
    /// Words for the logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tls::Off => "plain TCP (sslmode disable or prefer)".into(),
            Tls::Verified { roots, verify_host } => format!(
                "TLS, certificate verified against {}{}",
                roots
                    .as_ref()
                    .map_or("the system's roots".into(), |p| p.display().to_string()),
                if *verify_host {
                    ", host name checked"
                } else {
                    ", host name not checked (verify-ca)"
                }
            ),
        }
    }
}

/// Splits `sslmode` and `sslrootcert` out of a PostgreSQL URL (`postgres://…?k=v&…`) or key-value string
/// (`host=… sslmode=…`). Returns the connection string for tokio-postgres and the TLS choice.
pub(crate) fn split(url: &str) -> Result<(String, Tls), StoreError> {
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (mut kept, mut mode, mut roots) = (Vec::<String>::new(), None::<String>, None::<String>);
    if is_uri {
        let (head, query) = url.split_once('?').unwrap_or((url, ""));
        if let Some(fragment) = query.find('#') {
            return Err(StoreError::InvalidTls(format!(
                "the URL has a fragment ({}); PostgreSQL URLs have none",
                &query[fragment..]
            )));
        }
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let decoded = || {
                percent_decode(value)
                    .ok_or_else(|| StoreError::InvalidTls(format!("{key}: bad percent-encoding")))
            };
            match key {
                "sslmode" => mode = Some(decoded()?),
                "sslrootcert" => roots = Some(decoded()?),
                _ => kept.push(param.to_string()),
            }
        }
        return finish(mode, roots, kept, |kept| {
            if kept.is_empty() {
                head.to_string()
            } else {
                format!("{head}?{}", kept.join("&"))
            }
        });
    }
    for (key, raw, value) in key_values(url).map_err(StoreError::InvalidTls)? {
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => roots = Some(value),
            // Kept exactly as written (quotes and escapes included).
            _ => kept.push(format!("{key}={raw}")),
        }
    }
    finish(mode, roots, kept, |kept| kept.join(" "))
}

/// The TLS choice from `mode` and `roots`, and the driver's connection string: the other parameters `kept`
/// joined by `join`, with `sslmode=require` or `disable` added as the choice needs.
fn finish(
    mode: Option<String>,
    roots: Option<String>,
    mut kept: Vec<String>,
    join: impl FnOnce(&[String]) -> String,
) -> Result<(String, Tls), StoreError> {
    let tls = match mode.as_deref() {
        None | Some("disable") | Some("prefer") => {
            if roots.is_some() {
                return Err(StoreError::InvalidTls(
                    "sslrootcert is set but sslmode is not require, verify-ca or verify-full: the connection would be plain TCP".into(),
                ));
            }
            Tls::Off
        }
        Some("require") | Some("verify-full") => Tls::Verified {
            roots: roots.map(PathBuf::from),
            verify_host: true,
        },
        Some("verify-ca") => Tls::Verified {
            roots: roots.map(PathBuf::from),
            verify_host: false,
        },
        Some(other) => {
            return Err(StoreError::InvalidTls(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    // tokio-postgres does the TLS handshake only when told `require`; otherwise it gets `disable` or the
    // user's `prefer`, which with no TLS connector is plain TCP.
    match (&tls, mode.as_deref()) {
        (Tls::Verified { .. }, _) => kept.push("sslmode=require".into()),
        (Tls::Off, Some("disable")) => kept.push("sslmode=disable".into()),
        (Tls::Off, _) => {}
    }
    Ok((join(&kept), tls))
}

/// `(key, value as written, value)` of each parameter of a libpq key-value string: `key = value`, spaces around
/// `=` allowed, values bare or single-quoted with `\\` escapes.
fn key_values(s: &str) -> Result<Vec<(&str, &str, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        let Some(after) = rest.strip_prefix('=') else {
            return Err(format!("parameter {key:?} has no `=value`"));
        };
        rest = after.trim_start();
        let (raw, value, len) = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value of {key:?} has no closing quote"))?;
            (&rest[..end + 2], value, end + 2)
        } else {
            let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..len], rest[..len].to_string(), len)
        };
        out.push((key, raw, value));
        rest = rest[len..].trim_start();
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// An OpenSSL connector verifying as `tls` says (`None` for [`Tls::Off`]).
pub(crate) fn connector(tls: &Tls) -> Result<Option<MakeTlsConnector>, StoreError> {
    let Tls::Verified { roots, verify_host } = tls else {
        return Ok(None);
    };
    let openssl = |context: &'static str| {
        move |source: openssl::error::ErrorStack| StoreError::Tls { context, source }
    };
    // Verifies peers against the system's default roots unless told otherwise.
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(openssl("creating a TLS context"))?;
    if let Some(path) = roots {
        if !path.is_file() {
            return Err(StoreError::InvalidTls(format!(
                "sslrootcert {} is not a readable file",
                path.display()
            )));
        }
        builder
            .set_ca_file(path)
            .map_err(openssl("loading the sslrootcert file"))?;
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if !verify_host {
        connector.set_callback(|config, _host| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(Some(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(roots: Option<&str>, verify_host: bool) -> Tls {
        Tls::Verified {
            roots: roots.map(PathBuf::from),
            verify_host,
        }
    }

    #[test]
    fn a_url_without_tls_parameters_stays_plain_and_unchanged() {
        let url = "postgres://rep:pw@db:5432/reporting?application_name=x";
        assert_eq!(split(url).expect("valid"), (url.to_string(), Tls::Off));
    }

    #[test]
    fn verify_full_with_a_root_file_becomes_require_for_the_driver_and_keeps_other_parameters() {
        let (rest, tls) =
            split("postgresql://db/r?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem")
                .expect("valid");
        assert_eq!(rest, "postgresql://db/r?connect_timeout=5&sslmode=require");
        assert_eq!(tls, verified(Some("/etc/rds ca.pem"), true));
    }

    #[test]
    fn require_verifies_against_system_roots_and_verify_ca_skips_the_host_name() {
        assert_eq!(
            split("postgres://db/r?sslmode=require").expect("valid").1,
            verified(None, true)
        );
        assert_eq!(
            split("postgres://db/r?sslmode=verify-ca&sslrootcert=/ca.pem")
                .expect("valid")
                .1,
            verified(Some("/ca.pem"), false)
        );
    }

    #[test]
    fn key_value_strings_are_split_the_same_way() {
        let (rest, tls) =
            split("host=db dbname=r sslmode=verify-full sslrootcert=/ca.pem").expect("valid");
        assert_eq!(rest, "host=db dbname=r sslmode=require");
        assert_eq!(tls, verified(Some("/ca.pem"), true));
        assert_eq!(
            split("host=db sslmode=disable").expect("valid").0,
            "host=db sslmode=disable"
        );
    }

    #[test]
    fn prefer_is_plain_tcp_and_a_root_file_without_tls_is_refused() {
        assert_eq!(
            split("postgres://db/r?sslmode=prefer").expect("valid"),
            ("postgres://db/r".into(), Tls::Off)
        );
        let err = split("postgres://db/r?sslrootcert=/ca.pem").expect_err("roots without TLS");
        assert!(
            err.to_string().contains("sslrootcert is set but sslmode"),
            "{err}"
        );
    }

    #[test]
    fn unknown_modes_and_bad_encodings_are_named() {
        let err = split("postgres://db/r?sslmode=allow").expect_err("allow");
        assert!(
            err.to_string().contains("sslmode=allow is not one of"),
            "{err}"
        );
        let err = split("postgres://db/r?sslmode=require&sslrootcert=%zz").expect_err("bad %");
        assert!(
            err.to_string()
                .contains("sslrootcert: bad percent-encoding"),
            "{err}"
        );
    }

    #[test]
    fn key_value_quoting_and_spacing_follow_libpq_and_other_values_pass_through_as_written() {
        let (rest, tls) =
            split("host=db password='x  y\\'z' sslmode = verify-full sslrootcert='/tmp/a b.pem'")
                .expect("valid");
        assert_eq!(rest, "host=db password='x  y\\'z' sslmode=require");
        assert_eq!(tls, verified(Some("/tmp/a b.pem"), true));
        let err = split("host=db sslrootcert='/tmp/a").expect_err("unclosed quote");
        assert!(err.to_string().contains("no closing quote"), "{err}");
    }

    #[test]
    fn a_url_fragment_is_refused_rather_than_read_as_part_of_a_value() {
        let err = split("postgres://db/r?sslmode=require#frag").expect_err("fragment");
        assert!(err.to_string().contains("fragment"), "{err}");
    }
}
