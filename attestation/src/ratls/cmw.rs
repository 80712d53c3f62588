//! The CMW (RATS conceptual message wrapper) record inside the `id-pe-cmw` extension.
//!
//! Extension value: a DER `UTF8String` holding the JSON record `["<media type>", "<base64url of the evidence>"]`
//! (the JSON choice of the CMW extension's `CHOICE { json UTF8String, cbor OCTET STRING }`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::Utf8StringRef;
use der::{Decode, Encode};

use super::RaTlsError;

/// Encode a CMW record as the DER content of the extension.
pub fn encode_cmw(media_type: &str, value: &[u8]) -> Result<Vec<u8>, RaTlsError> {
    let json = serde_json::to_string(&[media_type, &URL_SAFE_NO_PAD.encode(value)])
        .map_err(|e| RaTlsError::Build(e.to_string()))?;
    Utf8StringRef::new(&json)
        .and_then(|s| s.to_der())
        .map_err(|e| RaTlsError::Build(format!("CMW: {e}")))
}

/// Decode the extension content into (media type, value).
pub fn decode_cmw(ext_value: &[u8]) -> Result<(String, Vec<u8>), RaTlsError> {
    let s = Utf8StringRef::from_der(ext_value)
        .map_err(|e| RaTlsError::Cmw(format!("not a DER UTF8String: {e}")))?;
    let record: Vec<String> = serde_json::from_str(s.as_str())
        .map_err(|e| RaTlsError::Cmw(format!("not a JSON CMW record: {e}")))?;
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
}
