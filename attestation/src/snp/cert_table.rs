//! The GUID-indexed certificate table that accompanies an SNP report (GHCB specification, "SNP Extended Guest
//! Request"): from `/dev/sev-guest`'s extended report and configfs-tsm's `auxblob`.
//!
//! Layout: entries of `GUID (16 bytes) | offset (u32 LE) | length (u32 LE)`, ended by an all-zero entry; offsets
//! are from the start of the table.

/// GUID of the VCEK entry.
pub(crate) const VCEK_GUID: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
/// GUID of the VLEK entry.
pub(crate) const VLEK_GUID: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
/// GUID of the ASK entry.
pub(crate) const ASK_GUID: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
/// GUID of the ARK entry.
pub(crate) const ARK_GUID: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";

const ENTRY_LEN: usize = 24;
/// More entries than any platform produces.
const MAX_ENTRIES: usize = 64;

/// Why a certificate table could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertTableError {
    /// The table has no terminating zero entry within the buffer.
    #[error("certificate table is not terminated")]
    Unterminated,
    /// An entry points outside the buffer.
    #[error("certificate table entry {guid} points outside the table ({offset}+{len} > {total})")]
    OutOfBounds {
        /// The entry's GUID.
        guid: String,
        /// Its offset.
        offset: usize,
        /// Its length.
        len: usize,
        /// The buffer length.
        total: usize,
    },
}

/// Format a GUID stored in the table (first three fields little-endian) as text.
fn guid_text(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// Encode a textual GUID in the table's byte order. Returns `None` for a malformed GUID.
fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let h = hex::decode(text.replace('-', "")).ok()?;
    if h.len() != 16 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
    b[4..6].copy_from_slice(&[h[5], h[4]]);
    b[6..8].copy_from_slice(&[h[7], h[6]]);
    b[8..].copy_from_slice(&h[8..]);
    Some(b)
}

/// Parse a table into `(GUID, data)` pairs.
pub(crate) fn parse(buf: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CertTableError> {
    let mut out = Vec::new();
    for i in 0..MAX_ENTRIES {
        let e = buf
            .get(i * ENTRY_LEN..(i + 1) * ENTRY_LEN)
            .ok_or(CertTableError::Unterminated)?;
        if e.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let guid = guid_text(&e[..16]);
        let offset = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let data = offset
            .checked_add(len)
            .and_then(|end| buf.get(offset..end))
            .ok_or_else(|| CertTableError::OutOfBounds {
                guid: guid.clone(),
                offset,
                len,
                total: buf.len(),
            })?;
        out.push((guid, data.to_vec()));
    }
    Err(CertTableError::Unterminated)
}

/// Build a table from `(GUID, data)` pairs (GUIDs that do not parse are skipped).
pub(crate) fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<([u8; 16], &[u8])> = entries
        .iter()
        .filter_map(|(g, d)| Some((guid_bytes(g)?, *d)))
        .collect();
    let header = (entries.len() + 1) * ENTRY_LEN;
    let mut out = vec![0u8; header];
    let mut offset = header;
    for (i, (g, d)) in entries.iter().enumerate() {
        let e = &mut out[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        e[..16].copy_from_slice(g);
        e[16..20].copy_from_slice(&(offset as u32).to_le_bytes());
        e[20..24].copy_from_slice(&(d.len() as u32).to_le_bytes());
        offset += d.len();
    }
    for (_, d) in &entries {
        out.extend_from_slice(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_refuses_bad_offsets() {
        let t = build(&[(VCEK_GUID, b"vcek"), (ASK_GUID, b"ask!!"), (ARK_GUID, b"")]);
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], (VCEK_GUID.to_string(), b"vcek".to_vec()));
        assert_eq!(parsed[1], (ASK_GUID.to_string(), b"ask!!".to_vec()));
        assert!(parse(&t[..30]).is_err());
        let mut bad = t.clone();
        bad[16] = 0xff;
        assert!(matches!(
            parse(&bad),
            Err(CertTableError::OutOfBounds { .. })
        ));
        assert_eq!(parse(&[0u8; 24]).unwrap(), vec![]);
        assert_eq!(parse(&[1u8; 10]), Err(CertTableError::Unterminated));
    }
}
