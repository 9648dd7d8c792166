//! A handshake's `location-string`: whether the peer is a maker, a taker,
//! or (joinmarket-rs only) rejected.
//!
//! The upstreams disagree on what is malformed. joinmarket-ng's
//! `HandshakeHandler._parse_location` checks only the port and treats any
//! failure as "not serving" (a taker); then the `PeerInfo` it builds
//! validates the host (`onion_address` must be a v3 onion or
//! `NOT-SERVING-ONION`, `jmcore/models.py`), so `"garbage:5222"` fails the
//! handshake silently (see [`python_peer_info`]).
//! joinmarket-rs's `OnionServiceAddr::parse` requires a real Tor v3 address
//! (56 base32 characters, version 3, SHA3 checksum) and a non-zero `u16`
//! port, and a failure disconnects the peer silently at handshake.

use std::sync::Arc;

use data_encoding::BASE32_NOPAD;
use sha3::{Digest, Sha3_256};

use super::NOT_SERVING_ONION;

/// What the directory makes of a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// Serves an onion: `PeerInfo.location_string`, as the registry prints it.
    Maker(Arc<str>),
    Taker,
    /// joinmarket-rs `HandshakeError::InvalidOnionAddress`, with its text.
    Rejected(String),
}

/// joinmarket-ng, HEAD and eb812d4c alike (`_parse_location`).
pub fn parse_python(location: &str) -> Location {
    if location == NOT_SERVING_ONION || location.is_empty() || !location.contains(':') {
        return Location::Taker;
    }
    // `host, port_str = location.split(":")`: anything but two parts raises.
    let mut parts = location.split(':');
    let (Some(host), Some(port), None) = (parts.next(), parts.next(), parts.next()) else {
        return Location::Taker;
    };
    match python_int(port) {
        Some(port) if (1..=65_535).contains(&port) => {
            Location::Maker(format!("{host}:{port}").into())
        }
        _ => Location::Taker,
    }
}

/// Python then builds `PeerInfo(nick=..., onion_address=host, ...)` from
/// the handshake (`handshake_handler.py` `process_handshake`), and pydantic
/// validates it (`jmcore/models.py`): `nick` `max_length=64`,
/// `onion_address` `pattern=r"^[a-z2-7]{56}\.onion$|^NOT-SERVING-ONION$"`.
/// A `ValidationError` is a `ValueError`: it becomes `HandshakeError(
/// "Invalid handshake format: ...")`, and `server.py` returns without a
/// reply, closing the connection. Only a bad or missing port fell back to a
/// taker, in `parse_python`. (The messages are pydantic's, one field each,
/// nick first as pydantic reports in field order.)
pub fn python_peer_info(nick: &str, location: Location) -> Location {
    let invalid = |what: &str| Location::Rejected(format!("Invalid handshake format: {what}"));
    if nick.chars().count() > 64 {
        return invalid("nick: String should have at most 64 characters");
    }
    match &location {
        Location::Maker(loc) => {
            let host = loc.rsplit_once(':').map_or(&**loc, |(host, _)| host);
            if is_v3_onion_shape(host) {
                location
            } else {
                invalid(
                    "onion_address: String should match pattern \
                     '^[a-z2-7]{56}\\.onion$|^NOT-SERVING-ONION$'",
                )
            }
        }
        _ => location,
    }
}

/// `^[a-z2-7]{56}\.onion$`: the shape of a v3 onion, checksum unchecked.
fn is_v3_onion_shape(host: &str) -> bool {
    host.strip_suffix(".onion").is_some_and(|label| {
        label.len() == 56
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

/// Digits only, no leading zero: the number prints as written.
fn is_canonical_number(s: &str) -> bool {
    !s.starts_with('0') && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Python's `int(str)` for the strings a port can be: surrounding
/// whitespace, an optional sign, digits with single underscores between them.
fn python_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let value: i64 = if digits.contains('_') {
        digits.replace('_', "").parse().ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -value } else { value })
}

/// joinmarket-rs (`PeerHandshake::validate` then `OnionServiceAddr::parse`).
pub fn parse_rust(location: &Arc<str>) -> Location {
    if location.is_empty() || &**location == NOT_SERVING_ONION {
        return Location::Taker;
    }
    let invalid =
        |why: &str| Location::Rejected(format!("invalid onion address in location-string: {why}"));
    let Some((host, port_str)) = location.rsplit_once(':') else {
        return invalid("missing port in location-string (expected '<onion>:<port>')");
    };
    let port = match port_str.parse::<u16>() {
        Ok(0) => return invalid("invalid port number: 0 (port must be non-zero)"),
        Ok(port) => port,
        Err(_) => return invalid(&format!("invalid port number: {port_str}")),
    };
    if let Err(why) = check_v3_onion(host) {
        return invalid(&format!("invalid onion address: {why}"));
    }
    // `as_location_string()`: the lowercased host and the port as a number;
    // the input itself when it is already written that way.
    if is_canonical_number(port_str) && !host.bytes().any(|b| b.is_ascii_uppercase()) {
        Location::Maker(location.clone())
    } else {
        Location::Maker(format!("{}:{port}", host.to_lowercase()).into())
    }
}

/// `OnionAddress::parse`: lowercase, 62 characters, `.onion`, base32 that
/// decodes to pubkey (32) + checksum (2) + version (1 = 0x03), checksum =
/// `SHA3-256(".onion checksum" || pubkey || version)[..2]`.
fn check_v3_onion(host: &str) -> Result<(), String> {
    let host = host.to_lowercase();
    if host.len() != 62 {
        return Err(format!(
            "wrong length: expected 62 chars (56 base32 + '.onion'), got {}",
            host.len()
        ));
    }
    let Some(encoded) = host.strip_suffix(".onion") else {
        return Err("missing '.onion' suffix".into());
    };
    let decoded = BASE32_NOPAD
        .decode(encoded.to_uppercase().as_bytes())
        .map_err(|e| format!("invalid base32 encoding: {e}"))?;
    let (pubkey, checksum, version) = (&decoded[..32], &decoded[32..34], decoded[34]);
    if version != 3 {
        return Err(format!(
            "wrong version byte: expected 0x03, got {version:#04x}"
        ));
    }
    if onion_checksum(pubkey, version) != checksum {
        return Err("checksum mismatch: address is corrupt or truncated".into());
    }
    Ok(())
}

fn onion_checksum(pubkey: &[u8], version: u8) -> [u8; 2] {
    let hash = Sha3_256::new()
        .chain_update(b".onion checksum")
        .chain_update(pubkey)
        .chain_update([version])
        .finalize();
    [hash[0], hash[1]]
}

/// A valid v3 onion location for a simulated maker, derived from its nick so
/// it is the same in every run (the "public key" is SHA3 of the nick).
pub fn onion_for(nick: &str) -> String {
    let pubkey = Sha3_256::digest(nick.as_bytes());
    let mut raw = pubkey.to_vec();
    raw.extend_from_slice(&onion_checksum(&pubkey, 3));
    raw.push(3);
    format!("{}.onion:5222", BASE32_NOPAD.encode(&raw).to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// joinmarket-rs's own test vector (Tor project documentation).
    const VALID_V3: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    fn parse_rust(s: &str) -> Location {
        super::parse_rust(&Arc::from(s))
    }
    fn parse_python(s: &str) -> Location {
        super::parse_python(&Arc::from(s))
    }

    #[test]
    fn rust_accepts_real_v3_onions_only() {
        let ok = format!("{VALID_V3}:5222");
        assert_eq!(parse_rust(&ok), Location::Maker(ok.clone().into()));
        assert_eq!(
            parse_rust(&ok.to_uppercase().replace(".ONION", ".onion")),
            Location::Maker(ok.into()),
            "case-insensitive, stored lowercase"
        );
        assert_eq!(
            parse_rust(&format!("{VALID_V3}:+5222")),
            Location::Maker(format!("{VALID_V3}:5222").into()),
            "u16::from_str takes a '+'; the location string prints the number"
        );
        assert_eq!(parse_rust(NOT_SERVING_ONION), Location::Taker);
        assert_eq!(parse_rust(""), Location::Taker);
        let flipped = VALID_V3.replacen('2', "3", 1);
        for (bad, why) in [
            ("garbage:5222", "wrong length"),
            (VALID_V3, "missing port"),
            (&format!("{VALID_V3}:0") as &str, "port must be non-zero"),
            (&format!("{VALID_V3}:70000"), "invalid port number: 70000"),
            (&format!("{flipped}:5222"), "checksum mismatch"),
        ] {
            match parse_rust(bad) {
                Location::Rejected(msg) => assert!(msg.contains(why), "{bad}: {msg}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn python_checks_the_port_only() {
        assert_eq!(
            parse_python("garbage:5222"),
            Location::Maker("garbage:5222".into())
        );
        assert_eq!(parse_python("x: +5_222 "), Location::Maker("x:5222".into()));
        assert_eq!(parse_python("x:05222"), Location::Maker("x:5222".into()));
        for taker in [
            NOT_SERVING_ONION,
            "",
            "no-port",
            "a:b:5222",
            "host:0",
            "host:65536",
            "host:-1",
            "host:5__222",
            "host:52x",
        ] {
            assert_eq!(parse_python(taker), Location::Taker, "{taker:?}");
        }
    }

    #[test]
    fn simulated_makers_have_valid_onions() {
        for nick in ["alice", "bob", "m1", "J5xhGSWE7VrxM7sO"] {
            let loc = onion_for(nick);
            assert_eq!(parse_rust(&loc), Location::Maker(loc.clone().into()));
            assert_eq!(parse_python(&loc), Location::Maker(loc.clone().into()));
        }
        assert_ne!(onion_for("alice"), onion_for("bob"));
    }
}
