//! Compressed requests (proto type 4): a u64 with the inner frame's size, then a zlib
//! stream of the inner frame, proto header included. Replies are never compressed (as in
//! Aerospike Community, which ignores the client's request for it).

use std::io::Read;

/// The inner frame of a compressed request body, refused past `bytes_max`.
pub fn inflate(body: &[u8], bytes_max: usize) -> Result<Vec<u8>, String> {
    let size: [u8; 8] =
        body.get(..8).and_then(|b| b.try_into().ok()).ok_or("compressed frame under 8 bytes")?;
    let size = u64::from_be_bytes(size);
    if size > bytes_max as u64 {
        return Err(format!("compressed frame inflates to {size} bytes, over {bytes_max}"));
    }
    let mut inner = Vec::with_capacity(size as usize);
    let mut decoder = flate2::read::ZlibDecoder::new(&body[8..]).take(size);
    decoder.read_to_end(&mut inner).map_err(|e| format!("bad zlib stream: {e}"))?;
    if inner.len() as u64 != size {
        return Err(format!("compressed frame inflated to {} bytes, said {size}", inner.len()));
    }
    Ok(inner)
}
