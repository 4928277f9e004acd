//! Aerospike's wire format: the 8-byte proto header, the 22-byte message header, fields
//! and ops (`../shared/aerospike-wire.md` §1, §3). Pure: no I/O, no engine; the decoder
//! never panics on any input (the `server_request` fuzz target checks it) and borrows
//! from the frame it decodes.

use std::fmt;

pub const PROTO_VERSION: u8 = 2;
pub const PROTO_HEADER_SIZE: usize = 8;
pub const MSG_HEADER_SIZE: usize = 22;
pub const TYPE_INFO: u8 = 1;
pub const TYPE_ADMIN: u8 = 2;
pub const TYPE_MSG: u8 = 3;
pub const TYPE_COMPRESSED: u8 = 4;

// info1
pub const INFO1_READ: u8 = 1;
pub const INFO1_GET_ALL: u8 = 1 << 1;
pub const INFO1_BATCH: u8 = 1 << 3;
pub const INFO1_NOBINDATA: u8 = 1 << 5;
// info2
pub const INFO2_WRITE: u8 = 1;
pub const INFO2_DELETE: u8 = 1 << 1;
pub const INFO2_GENERATION: u8 = 1 << 2;
pub const INFO2_GENERATION_GT: u8 = 1 << 3;
pub const INFO2_CREATE_ONLY: u8 = 1 << 5;
pub const INFO2_RESPOND_ALL_OPS: u8 = 1 << 7;
// info3
pub const INFO3_LAST: u8 = 1;
pub const INFO3_PARTITION_DONE: u8 = 1 << 2;
pub const INFO3_UPDATE_ONLY: u8 = 1 << 3;
pub const INFO3_CREATE_OR_REPLACE: u8 = 1 << 4;
pub const INFO3_REPLACE_ONLY: u8 = 1 << 5;

// field types
pub const FIELD_NAMESPACE: u8 = 0;
pub const FIELD_SET: u8 = 1;
pub const FIELD_KEY: u8 = 2;
pub const FIELD_DIGEST: u8 = 4;
pub const FIELD_TRID: u8 = 7;
pub const FIELD_RECS_PER_SEC: u8 = 10;
pub const FIELD_PID_ARRAY: u8 = 11;
pub const FIELD_DIGEST_ARRAY: u8 = 12;
pub const FIELD_MAX_RECORDS: u8 = 13;
pub const FIELD_UDF_PACKAGE: u8 = 30;
pub const FIELD_UDF_FUNCTION: u8 = 31;
pub const FIELD_UDF_ARGLIST: u8 = 32;
pub const FIELD_INDEX_NAME: u8 = 21;
pub const FIELD_INDEX_RANGE: u8 = 22;
pub const FIELD_INDEX_CONTEXT: u8 = 23;
pub const FIELD_INDEX_EXPRESSION: u8 = 24;
pub const FIELD_INDEX_TYPE: u8 = 26;
pub const FIELD_BATCH: u8 = 41;
pub const FIELD_FILTER: u8 = 43;

// op codes
pub const OP_READ: u8 = 1;
pub const OP_WRITE: u8 = 2;
pub const OP_CDT_READ: u8 = 3;
pub const OP_CDT_MODIFY: u8 = 4;
pub const OP_INCR: u8 = 5;
pub const OP_EXP_READ: u8 = 7;
pub const OP_EXP_MODIFY: u8 = 8;
pub const OP_APPEND: u8 = 9;
pub const OP_PREPEND: u8 = 10;
pub const OP_TOUCH: u8 = 11;
pub const OP_BITS_READ: u8 = 12;
pub const OP_BITS_MODIFY: u8 = 13;
pub const OP_DELETE_ALL: u8 = 14;
pub const OP_HLL_READ: u8 = 15;
pub const OP_HLL_MODIFY: u8 = 16;
pub const OP_STRING_READ: u8 = 17;
pub const OP_STRING_MODIFY: u8 = 18;
pub const OP_TO_STRING: u8 = 19;

pub const DIGEST_SIZE: usize = 20;
pub const BIN_NAME_MAX: usize = 15;

/// Seconds from the Unix epoch to 2010-01-01, Aerospike's epoch for void times.
pub const CITRUSLEAF_EPOCH_S: u32 = 1_262_304_000;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

/// The proto header of a frame: its type and body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoHeader {
    pub version: u8,
    pub kind: u8,
    pub body_bytes: u64,
}

impl ProtoHeader {
    pub fn decode(b: &[u8; PROTO_HEADER_SIZE]) -> ProtoHeader {
        let mut size = [0u8; 8];
        size[2..].copy_from_slice(&b[2..8]);
        ProtoHeader { version: b[0], kind: b[1], body_bytes: u64::from_be_bytes(size) }
    }

    pub fn encode(kind: u8, body_bytes: usize) -> [u8; PROTO_HEADER_SIZE] {
        let size = (body_bytes as u64).to_be_bytes();
        let mut b = [0u8; PROTO_HEADER_SIZE];
        b[0] = PROTO_VERSION;
        b[1] = kind;
        b[2..].copy_from_slice(&size[2..]);
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op<'a> {
    pub code: u8,
    pub particle: u8,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// The 22-byte message header, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgHeader {
    pub info1: u8,
    pub info2: u8,
    pub info3: u8,
    pub info4: u8,
    pub result_code: u8,
    pub generation: u32,
    pub record_ttl: u32,
    pub transaction_ttl: u32,
    pub n_fields: u16,
    pub n_ops: u16,
}

/// A decoded AS_MSG body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: MsgHeader,
    pub fields: Vec<Field<'a>>,
    pub ops: Vec<Op<'a>>,
}

impl<'a> Message<'a> {
    pub fn field(&self, kind: u8) -> Option<&'a [u8]> {
        self.fields.iter().find(|f| f.kind == kind).map(|f| f.data)
    }
}

/// Reads big-endian fields in order from a byte slice, each read checked against its end.
pub struct ByteReader<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        ByteReader { b, at: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end =
            end.ok_or_else(|| bad(format!("{n} bytes wanted at byte {} of {}", self.at, self.b.len())))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn is_done(&self) -> bool {
        self.at == self.b.len()
    }
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl MsgHeader {
    pub fn decode(b: &[u8]) -> Result<MsgHeader, WireError> {
        if b.len() < MSG_HEADER_SIZE {
            return Err(bad(format!("message of {} bytes is shorter than its 22-byte header", b.len())));
        }
        if b[0] as usize != MSG_HEADER_SIZE {
            return Err(bad(format!("message header size {} is not 22", b[0])));
        }
        let u32_at = |at| be_u32(b, at).unwrap_or(0);
        Ok(MsgHeader {
            info1: b[1],
            info2: b[2],
            info3: b[3],
            info4: b[4],
            result_code: b[5],
            generation: u32_at(6),
            record_ttl: u32_at(10),
            transaction_ttl: u32_at(14),
            n_fields: be_u16(b, 18).unwrap_or(0),
            n_ops: be_u16(b, 20).unwrap_or(0),
        })
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(MSG_HEADER_SIZE as u8);
        out.extend_from_slice(&[self.info1, self.info2, self.info3, self.info4, self.result_code]);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.record_ttl.to_be_bytes());
        out.extend_from_slice(&self.transaction_ttl.to_be_bytes());
        out.extend_from_slice(&self.n_fields.to_be_bytes());
        out.extend_from_slice(&self.n_ops.to_be_bytes());
    }
}

/// Decodes `count` fields from `b` starting at `*at`.
pub fn decode_fields<'a>(b: &'a [u8], at: &mut usize, count: u16) -> Result<Vec<Field<'a>>, WireError> {
    let mut fields = Vec::with_capacity(count.min(64) as usize);
    for i in 0..count {
        let size = be_u32(b, *at).ok_or_else(|| bad(format!("field {i} runs past the message")))? as usize;
        if size == 0 {
            return Err(bad(format!("field {i} has size 0")));
        }
        let end = (*at + 4).checked_add(size).filter(|&e| e <= b.len());
        let end = end.ok_or_else(|| bad(format!("field {i} of {size} bytes runs past the message")))?;
        fields.push(Field { kind: b[*at + 4], data: &b[*at + 5..end] });
        *at = end;
    }
    Ok(fields)
}

/// Decodes `count` ops from `b` starting at `*at`.
pub fn decode_ops<'a>(b: &'a [u8], at: &mut usize, count: u16) -> Result<Vec<Op<'a>>, WireError> {
    let mut ops = Vec::with_capacity(count.min(64) as usize);
    for i in 0..count {
        let size = be_u32(b, *at).ok_or_else(|| bad(format!("op {i} runs past the message")))? as usize;
        let end = (*at + 4).checked_add(size).filter(|&e| e <= b.len() && size >= 4);
        let end = end.ok_or_else(|| bad(format!("op {i} of {size} bytes runs past the message")))?;
        let name_len = b[*at + 7] as usize;
        if 4 + name_len > size {
            return Err(bad(format!("op {i}: bin name of {name_len} bytes runs past the op")));
        }
        let name_start = *at + 8;
        ops.push(Op {
            code: b[*at + 4],
            particle: b[*at + 5],
            name: &b[name_start..name_start + name_len],
            value: &b[name_start + name_len..end],
        });
        *at = end;
    }
    Ok(ops)
}

/// Decodes an AS_MSG body (the bytes after the proto header); trailing bytes are an error.
pub fn decode_message(body: &[u8]) -> Result<Message<'_>, WireError> {
    let header = MsgHeader::decode(body)?;
    let mut at = MSG_HEADER_SIZE;
    let fields = decode_fields(body, &mut at, header.n_fields)?;
    let ops = decode_ops(body, &mut at, header.n_ops)?;
    if at != body.len() {
        return Err(bad(format!("{} bytes follow the message's last op", body.len() - at)));
    }
    Ok(Message { header, fields, ops })
}

/// Builds reply frames of AS_MSG messages. A message is written whole into the current
/// frame, so that no message is ever split across frames (both clients need that).
#[derive(Default)]
pub struct Reply {
    pub out: Vec<u8>,
    frame_start: Option<usize>,
}

impl Reply {
    /// Bytes in the open frame so far.
    pub fn frame_bytes(&self) -> usize {
        self.frame_start.map_or(0, |start| self.out.len() - start)
    }

    /// Starts a message (opening a frame if none is open); fields and ops follow.
    pub fn message(&mut self, header: &MsgHeader) {
        if self.frame_start.is_none() {
            self.frame_start = Some(self.out.len());
            self.out.extend_from_slice(&[0; PROTO_HEADER_SIZE]);
        }
        header.encode_into(&mut self.out);
    }

    pub fn field(&mut self, kind: u8, data: &[u8]) {
        self.out.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
        self.out.push(kind);
        self.out.extend_from_slice(data);
    }

    pub fn op(&mut self, code: u8, particle: u8, name: &[u8], value: &[u8]) {
        let size = 4 + name.len() + value.len();
        self.out.extend_from_slice(&(size as u32).to_be_bytes());
        self.out.extend_from_slice(&[code, particle, 0, name.len() as u8]);
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(value);
    }

    /// Closes the open frame (writing its size); the next message opens a new one.
    pub fn end_frame(&mut self) {
        if let Some(start) = self.frame_start.take() {
            let body = self.out.len() - start - PROTO_HEADER_SIZE;
            self.out[start..start + PROTO_HEADER_SIZE].copy_from_slice(&ProtoHeader::encode(TYPE_MSG, body));
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.end_frame();
        self.out
    }
}

/// A frame of type INFO with this text body.
pub fn info_frame(text: &str) -> Vec<u8> {
    let mut out = ProtoHeader::encode(TYPE_INFO, text.len()).to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// Aerospike void time (seconds since 2010, 0 = never) of a Unix void time.
pub fn void_time_since_2010(unix_void_time_s: u32) -> u32 {
    if unix_void_time_s == 0 {
        0
    } else {
        unix_void_time_s.saturating_sub(CITRUSLEAF_EPOCH_S).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(u8, &[u8])], ops: &[(u8, u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut reply = Reply::default();
        let header =
            MsgHeader { n_fields: fields.len() as u16, n_ops: ops.len() as u16, ..Default::default() };
        reply.message(&header);
        for (kind, data) in fields {
            reply.field(*kind, data);
        }
        for (code, particle, name, value) in ops {
            reply.op(*code, *particle, name, value);
        }
        reply.finish()
    }

    #[test]
    fn a_message_round_trips_and_every_truncation_is_an_error() {
        let frame = request(
            &[(FIELD_NAMESPACE, b"test"), (FIELD_DIGEST, &[7; 20])],
            &[(OP_WRITE, 1, b"bin", &[0; 8])],
        );
        let proto = ProtoHeader::decode(frame[..8].try_into().unwrap());
        assert_eq!((proto.version, proto.kind, proto.body_bytes as usize), (2, TYPE_MSG, frame.len() - 8));
        let message = decode_message(&frame[8..]).unwrap();
        assert_eq!(message.field(FIELD_NAMESPACE), Some(&b"test"[..]));
        assert_eq!(message.ops[0], Op { code: OP_WRITE, particle: 1, name: b"bin", value: &[0; 8] });
        for len in 8..frame.len() {
            assert!(decode_message(&frame[8..len]).is_err(), "truncated at {len}");
        }
        let mut longer = frame[8..].to_vec();
        longer.push(0);
        assert!(decode_message(&longer).is_err());
    }

    #[test]
    fn an_op_whose_name_runs_past_it_is_an_error() {
        let mut frame = request(&[], &[(OP_READ, 0, b"ab", b"")]);
        let name_len_at = 8 + MSG_HEADER_SIZE + 7;
        frame[name_len_at] = 200;
        assert!(decode_message(&frame[8..]).is_err());
    }

    #[test]
    fn void_times_count_from_2010() {
        assert_eq!(void_time_since_2010(0), 0);
        assert_eq!(void_time_since_2010(CITRUSLEAF_EPOCH_S + 100), 100);
    }
}
