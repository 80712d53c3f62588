//! Crafted TLS bytes for the tests of the gateway's ClientHello reader and of the proxy: a minimal TLS 1.3
//! ClientHello, TLS records carrying it, and the alert records the gateway answers with.

/// A minimal TLS 1.3 ClientHello handshake message with SNI `sni` (none when `None`) and, when `padding` is not 0,
/// a padding extension of that many bytes.
pub fn client_hello_message(sni: Option<&str>, padding: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]); // legacy_version
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut exts = Vec::new();
    if let Some(sni) = sni {
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        push_ext(&mut exts, 0x0000, &sni_ext);
    }
    push_ext(&mut exts, 0x002b, &[0x02, 0x03, 0x04]); // supported_versions: TLS 1.3
    push_ext(&mut exts, 0x000d, &[0x00, 0x02, 0x08, 0x04]); // signature_algorithms: rsa_pss_rsae_sha256
    push_ext(&mut exts, 0x000a, &[0x00, 0x02, 0x00, 0x1d]); // supported_groups: x25519
    let mut ks = vec![0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
    ks.extend_from_slice(&[9u8; 32]);
    push_ext(&mut exts, 0x0033, &ks); // key_share
    if padding > 0 {
        push_ext(&mut exts, 0x0015, &vec![0u8; padding]);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![0x01];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

fn push_ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Wraps a handshake message into TLS records of at most `record_len` bytes of payload each.
pub fn records(msg: &[u8], record_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in msg.chunks(record_len) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The bytes of a fatal alert record with `description`, as the gateway sends it.
pub fn alert(description: u8) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}
