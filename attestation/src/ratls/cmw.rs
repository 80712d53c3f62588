//! The CMW (RATS conceptual message wrapper) inside the `id-pe-cmw` extension.
//!
//! Extension value: a DER `UTF8String` (the JSON choice of the CMW extension's
//! `CHOICE { json UTF8String, cbor OCTET STRING }`) holding either
//!
//! - one JSON record `["<media type>", "<base64url of the evidence>"]`, or
//! - a CMW collection `{"evidence": [<that record>], "config-digest": ["`[`CONFIG_DIGEST_MEDIA_TYPE`]`", "<base64url
//!   of 32 bytes>"]}` when the certificate binds its owner's configuration digest ([`crate::config_digest`]).
//!
//! A collection with other labels, without evidence, or with a digest of another length is refused.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::Utf8StringRef;
use der::{Decode, Encode};

use super::RaTlsError;
use crate::config_digest::ConfigDigest;

/// The media type of the configuration digest in a CMW collection.
pub const CONFIG_DIGEST_MEDIA_TYPE: &str = "application/vnd.tee-gateway.config-digest.v1";

/// The collection label of the evidence.
const EVIDENCE_LABEL: &str = "evidence";
/// The collection label of the configuration digest.
const CONFIG_DIGEST_LABEL: &str = "config-digest";

/// What an `id-pe-cmw` extension carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmwExtension {
    /// The evidence's media type.
    pub media_type: String,
    /// The evidence bytes.
    pub evidence: Vec<u8>,
    /// The configuration digest, when the extension is a collection that carries one.
    pub config_digest: Option<ConfigDigest>,
}

/// Encode the extension's DER content: a single record, or a collection when there is a configuration digest.
pub fn encode_extension(
    media_type: &str,
    evidence: &[u8],
    config_digest: Option<&ConfigDigest>,
) -> Result<Vec<u8>, RaTlsError> {
    let Some(digest) = config_digest else {
        return encode_cmw(media_type, evidence);
    };
    let record = |t: &str, v: &[u8]| [t.to_owned(), URL_SAFE_NO_PAD.encode(v)];
    let collection = BTreeMap::from([
        (EVIDENCE_LABEL, record(media_type, evidence)),
        (
            CONFIG_DIGEST_LABEL,
            record(CONFIG_DIGEST_MEDIA_TYPE, digest.as_bytes()),
        ),
    ]);
    let json = serde_json::to_string(&collection).map_err(|e| RaTlsError::Build(e.to_string()))?;
    utf8_der(&json)
}

/// Decode the extension's DER content, a single record or a collection.
pub fn decode_extension(ext_value: &[u8]) -> Result<CmwExtension, RaTlsError> {
    let text = utf8_text(ext_value)?;
    if !text.trim_start().starts_with('{') {
        let (media_type, evidence) = decode_record(text)?;
        return Ok(CmwExtension {
            media_type,
            evidence,
            config_digest: None,
        });
    }
    let mut collection: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| RaTlsError::Cmw(format!("not a JSON CMW collection: {e}")))?;
    let mut take = |label: &str| -> Result<Option<(String, Vec<u8>)>, RaTlsError> {
        collection
            .remove(label)
            .map(|v| record_of(serde_json::from_value(v)))
            .transpose()
    };
    let (media_type, evidence) = take(EVIDENCE_LABEL)?
        .ok_or_else(|| RaTlsError::Cmw("collection without evidence".into()))?;
    let config_digest = match take(CONFIG_DIGEST_LABEL)? {
        None => None,
        Some((t, _)) if t != CONFIG_DIGEST_MEDIA_TYPE => {
            return Err(RaTlsError::Cmw(format!(
                "configuration digest of media type {t:?}, expected {CONFIG_DIGEST_MEDIA_TYPE:?}"
            )))
        }
        Some((_, bytes)) => Some(ConfigDigest(
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                RaTlsError::Cmw(format!(
                    "configuration digest of {} bytes, expected 32",
                    bytes.len()
                ))
            })?,
        )),
    };
    if let Some(label) = collection.keys().next() {
        return Err(RaTlsError::Cmw(format!(
            "unknown collection label {label:?}"
        )));
    }
    Ok(CmwExtension {
        media_type,
        evidence,
        config_digest,
    })
}

fn utf8_der(text: &str) -> Result<Vec<u8>, RaTlsError> {
    Utf8StringRef::new(text)
        .and_then(|s| s.to_der())
        .map_err(|e| RaTlsError::Build(format!("CMW: {e}")))
}

fn utf8_text(ext_value: &[u8]) -> Result<&str, RaTlsError> {
    Utf8StringRef::from_der(ext_value)
        .map(|s| s.as_str())
        .map_err(|e| RaTlsError::Cmw(format!("not a DER UTF8String: {e}")))
}

/// Encode a CMW record as the DER content of the extension.
pub fn encode_cmw(media_type: &str, value: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    let json = serde_json::to_string(&[media_type, &URL_SAFE_NO_PAD.encode(value)])
        .map_err(|e| RaTlsError::Build(e.to_string()))?;
    utf8_der(&json)
}

/// Decode the content of an extension holding a single record into (media type, value).
pub fn decode_cmw(ext_value: &[u8]) -> Result<(String, Vec<u8>), RaTlsError> {
    decode_record(utf8_text(ext_value)?)
}

/// Decode one JSON record `[type, base64url value]`.
fn decode_record(text: &str) -> Result<(String, Vec<u8>), RaTlsError> {
    record_of(serde_json::from_str(text))
}

/// The (media type, value) of a record as JSON parsing gave it (from text, or from a collection's member).
fn record_of(
    parsed: Result<Vec<String>, serde_json::Error>,
) -> Result<(String, Vec<u8>), RaTlsError> {
    let record = parsed.map_err(|e| RaTlsError::Cmw(format!("not a JSON CMW record: {e}")))?;
    match <[String; 2]>::try_from(record) {
        Ok([media_type, value]) => {
            let value = URL_SAFE_NO_PAD
                .decode(value.as_bytes())
                .map_err(|e| RaTlsError::Cmw(format!("value is not base64url: {e}")))?;
            Ok((media_type, value))
        }
        Err(r) => Err(RaTlsError::Cmw(format!(
            "expected a [type, value] record, got {} elements",
            r.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmw_round_trip_and_refusals() {
        let enc = encode_cmw("application/x", &[0, 1, 2, 255]).unwrap();
        assert_eq!(enc[0], 0x0c);
        assert_eq!(
            decode_cmw(&enc).unwrap(),
            ("application/x".to_string(), vec![0, 1, 2, 255])
        );
        let bad =
            |json: &str| decode_cmw(&Utf8StringRef::new(json).unwrap().to_der().unwrap()).is_err();
        assert!(bad("[\"a\"]"));
        assert!(bad("[\"a\", \"AA\", \"x\"]"));
        assert!(bad("[\"a\", \"*\"]"));
        assert!(bad("{}"));
        assert!(decode_cmw(&[0x04, 0x01, 0x00]).is_err());
    }

    #[test]
    fn collection_carries_the_configuration_digest_and_odd_ones_are_refused() {
        let digest = ConfigDigest([7; 32]);
        let enc = encode_extension("application/x", &[1, 2], Some(&digest)).unwrap();
        let got = decode_extension(&enc).unwrap();
        assert_eq!(got.media_type, "application/x");
        assert_eq!(got.evidence, vec![1, 2]);
        assert_eq!(got.config_digest, Some(digest));
        // Without a digest: the single record, as before.
        let plain = encode_extension("application/x", &[1, 2], None).unwrap();
        assert_eq!(plain, encode_cmw("application/x", &[1, 2]).unwrap());
        assert_eq!(decode_extension(&plain).unwrap().config_digest, None);

        let refused = |json: &str| {
            decode_extension(&Utf8StringRef::new(json).unwrap().to_der().unwrap())
                .unwrap_err()
                .to_string()
        };
        let ev = r#""evidence":["application/x","AQI"]"#;
        let d32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(refused(&format!(
            r#"{{"config-digest":["{CONFIG_DIGEST_MEDIA_TYPE}","{d32}"]}}"#
        ))
        .contains("without evidence"));
        assert!(refused(&format!(
            r#"{{{ev},"config-digest":["{CONFIG_DIGEST_MEDIA_TYPE}","AQI"]}}"#
        ))
        .contains("2 bytes"));
        assert!(refused(&format!(
            r#"{{{ev},"config-digest":["text/plain","{d32}"]}}"#
        ))
        .contains("media type"));
        assert!(refused(&format!(r#"{{{ev},"extra":["a","AQI"]}}"#)).contains("\"extra\""));
    }
}
