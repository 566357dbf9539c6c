//! The few MQTT 3.1.1 packets the generator needs to drive a broker
//! (mosquitto) like the HTTP servers: CONNECT, SUBSCRIBE, PUBLISH at QoS 0
//! and PINGREQ out; CONNACK, SUBACK, PUBLISH and PINGRESP in. Sans-io:
//! encoders append to a buffer, the decoder takes whatever bytes a read
//! returned and hands out each PUBLISH payload as one "line".
//!
//! QoS 0 publishes are never answered, so a publisher that wants a
//! round trip (closed loop, like an HTTP publish) sends PINGREQ right after
//! each PUBLISH: a broker handles a connection's packets in order, so the
//! PINGRESP arrives once the PUBLISH has been taken in.

/// Seconds a client promises to send something within (CONNECT keep-alive);
/// the broker drops a client silent for 1.5 times this.
pub const KEEP_ALIVE_SECS: u16 = 10;

/// Packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const SUBACK: u8 = 9;
const PINGRESP: u8 = 13;

/// A whole PINGREQ packet.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// The largest packet the decoder accepts (ours are a few hundred bytes).
const MAX_PACKET: usize = 1 << 20;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT with a clean session and an empty client id (the broker
/// assigns one), no will, no credentials.
pub fn connect(out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(12);
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&KEEP_ALIVE_SECS.to_be_bytes());
    put_str(&mut body, b"");
    out.push(CONNECT << 4);
    put_len(out, body.len());
    out.extend_from_slice(&body);
}

/// SUBSCRIBE to one topic filter at QoS 0.
pub fn subscribe(out: &mut Vec<u8>, topic: &str) {
    out.push(0x82); // SUBSCRIBE, reserved flags 0010
    put_len(out, 2 + 2 + topic.len() + 1);
    out.extend_from_slice(&1u16.to_be_bytes()); // packet id
    put_str(out, topic.as_bytes());
    out.push(0); // requested QoS
}

/// The fixed header and topic of a QoS 0 PUBLISH whose payload (`len`
/// bytes) the caller appends.
pub fn publish_head(out: &mut Vec<u8>, topic: &str, len: usize) {
    out.push(PUBLISH << 4);
    put_len(out, 2 + topic.len() + len);
    put_str(out, topic.as_bytes());
}

/// One whole packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// The first byte (type and flags).
    pub first: u8,
    /// Where the variable header starts, and the packet's whole length.
    pub body_at: usize,
    pub len: usize,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// The packet at the start of `buf`: `Ok(None)` = need more bytes.
pub fn next_packet(buf: &[u8]) -> Result<Option<Packet>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut n = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        n |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err("MQTT remaining length over 4 bytes".into());
        }
    }
    if n > MAX_PACKET {
        return Err(format!("MQTT packet of {n} bytes"));
    }
    if buf.len() < i + n {
        return Ok(None);
    }
    Ok(Some(Packet {
        first,
        body_at: i,
        len: i + n,
    }))
}

/// What a publisher's connection got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// CONNACK with its return code (0 = accepted).
    Connack(u8),
    /// PINGRESP: every packet sent before the PINGREQ was taken in.
    Pong,
    /// Anything else (ignored).
    Other,
}

/// Classifies a packet of a publisher's connection.
pub fn answer(buf: &[u8], p: &Packet) -> Answer {
    match p.kind() {
        CONNACK => Answer::Connack(buf.get(p.body_at + 1).copied().unwrap_or(255)),
        PINGRESP => Answer::Pong,
        _ => Answer::Other,
    }
}

/// Waits for CONNACK then SUBACK at the start of a subscriber's stream:
/// `Ok(Some(n))` once both arrived in the first `n` bytes.
pub fn subscribed(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    let mut connacked = false;
    while let Some(p) = next_packet(&buf[at..])? {
        let body = &buf[at + p.body_at..at + p.len];
        match p.kind() {
            CONNACK => match body.get(1) {
                Some(0) => connacked = true,
                rc => return Err(format!("CONNACK refused: {rc:?}")),
            },
            SUBACK if connacked => {
                return match body.get(2) {
                    Some(q) if *q <= 2 => Ok(Some(at + p.len)),
                    q => Err(format!("SUBACK refused: {q:?}")),
                }
            }
            k => return Err(format!("unexpected MQTT packet type {k} while subscribing")),
        }
        at += p.len;
    }
    Ok(None)
}

/// The text a PINGRESP is reported as (`lines::parse_line` calls it a ping).
pub const PING_LINE: &[u8] = b"stillalive";

/// Splits a subscriber's stream into packets: each PUBLISH payload is one
/// line, a PINGRESP is `PING_LINE`.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// An incomplete packet carried over between reads.
    partial: Vec<u8>,
}

impl StreamDecoder {
    pub fn feed(&mut self, data: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<(), String> {
        if self.partial.is_empty() {
            let used = Self::packets(data, on_line)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = Self::packets(&self.partial, on_line)?;
            self.partial.drain(..used);
        }
        Ok(())
    }

    /// Handles every whole packet in `buf`; returns the bytes used.
    fn packets(buf: &[u8], on_line: &mut impl FnMut(&[u8])) -> Result<usize, String> {
        let mut at = 0;
        while let Some(p) = next_packet(&buf[at..])? {
            let pkt = &buf[at..at + p.len];
            match p.kind() {
                PUBLISH => {
                    let body = &pkt[p.body_at..];
                    if body.len() < 2 {
                        return Err("short PUBLISH".into());
                    }
                    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    // QoS > 0 would carry a packet id after the topic.
                    let id = if p.first & 0x06 != 0 { 2 } else { 0 };
                    let start = 2 + tlen + id;
                    if body.len() < start {
                        return Err("short PUBLISH".into());
                    }
                    on_line(&body[start..]);
                }
                PINGRESP => on_line(PING_LINE),
                _ => {}
            }
            at += p.len;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, 1 << 20] {
            let mut b = vec![0x30];
            put_len(&mut b, n);
            b.resize(b.len() + n, 0);
            let p = next_packet(&b).unwrap().unwrap();
            assert_eq!(p.len, b.len());
            assert_eq!(next_packet(&b[..b.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn connect_and_subscribe_bytes() {
        let mut b = Vec::new();
        connect(&mut b);
        assert_eq!(
            b,
            [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 0]
        );
        b.clear();
        subscribe(&mut b, "bench");
        assert_eq!(b, [0x82, 10, 0, 1, 0, 5, b'b', b'e', b'n', b'c', b'h', 0]);
    }

    #[test]
    fn acks_then_publishes_split_anywhere() {
        let mut wire = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0];
        let acks = wire.len();
        publish_head(&mut wire, "bench", 3);
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&[0xD0, 0]);
        publish_head(&mut wire, "bench", 200);
        wire.resize(wire.len() + 200, b'x');
        assert_eq!(subscribed(&wire[..acks - 1]).unwrap(), None);
        assert_eq!(subscribed(&wire).unwrap(), Some(acks));
        for split in acks..wire.len() {
            let mut d = StreamDecoder::default();
            let mut got = Vec::new();
            let mut on = |l: &[u8]| got.push(l.to_vec());
            d.feed(&wire[acks..split], &mut on).unwrap();
            d.feed(&wire[split..], &mut on).unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], b"abc");
            assert_eq!(got[1], PING_LINE);
            assert_eq!(got[2], vec![b'x'; 200]);
        }
        assert!(subscribed(&[0x20, 2, 0, 5]).is_err());
    }
}
